"""deploy/container: the Dockerfile parses with a real Dockerfile parser and copies only
paths that exist; compose.yaml validates against the Compose Specification's schema.

compose-spec.json beside this file is schema/compose-spec.json from
github.com/compose-spec/compose-spec (commit 00655e2222608fa6eaecdf12ac5195889ca2244a,
Apache License 2.0), unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import dockerfile
import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
CONTAINER = REPO / "deploy" / "container"
DOCKERFILE = CONTAINER / "Dockerfile"
COMPOSE = CONTAINER / "compose.yaml"
SCHEMA = Path(__file__).with_name("compose-spec.json")


def _commands() -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(DOCKERFILE))


def _context() -> Path:
    build = yaml.safe_load(COMPOSE.read_text())["services"]["regulator"]["build"]
    return (CONTAINER / build["context"]).resolve()


def test_dockerfile_copies_existing_paths() -> None:
    # The build context is the repository root (compose.yaml says so; so do the notes).
    assert _context() == REPO
    copies = [c for c in _commands() if c.cmd in {"COPY", "ADD"}]
    assert copies
    for command in copies:
        if any(flag.startswith("--from=") for flag in command.flags):
            continue  # from an earlier stage, not the build context
        *sources, _destination = command.value
        for source in sources:
            assert (REPO / source).exists(), f"{command.original}: {source} does not exist"


def test_dockerfile_runs_unprivileged_with_state_volume_and_healthcheck() -> None:
    commands = _commands()
    assert commands[0].value[0].startswith("python:3.11-slim")
    last_stage = commands[max(i for i, c in enumerate(commands) if c.cmd == "FROM") :]
    users = [c.value[0] for c in last_stage if c.cmd == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert any("/var/lib/regulator" in c.value for c in last_stage if c.cmd == "VOLUME")
    (health,) = [c for c in last_stage if c.cmd == "HEALTHCHECK"]
    assert "/healthz" in health.original and "urllib" in health.original


def test_compose_validates_against_the_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    document = yaml.safe_load(COMPOSE.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(document), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_compose_validation_catches_a_typo() -> None:
    # The schema really constrains services (guards against an empty or wrong schema).
    schema = json.loads(SCHEMA.read_text())
    document = yaml.safe_load(COMPOSE.read_text())
    document["services"]["regulator"]["imagee"] = "typo"
    assert list(jsonschema.Draft7Validator(schema).iter_errors(document))


def test_compose_mounts_the_repository_files() -> None:
    document = yaml.safe_load(COMPOSE.read_text())
    sources = set()
    for service in document["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                sources.add(source)
                assert (CONTAINER / source).exists(), source
    # The same files the tests check, not copies.
    assert {
        "../prometheus",
        "../alertmanager/alertmanager.yml",
        "../../grafana/provisioning",
        "../../grafana/dashboards",
    } <= sources
    # The token file is the user's to create (see the comment at the top of compose.yaml).
    assert document["secrets"]["regulator_token"]["file"] == "./regulator_token"
