"""Schemathesis' stateful phase against a real daemon: sequences of calls that follow
OpenAPI links (status -> push a sample of the served shape -> label it by the id the
answer gave -> recalibrate -> status, models -> roll back -> models), with the token.

The daemon's own document has no links: it has no path parameters and only one answer
has a schema, so there is nothing for a link to carry but the sample ids that
``POST /v1/samples`` returns; :func:`tests.service.fuzzing.with_links` adds them here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.service.conftest import TOKEN, DaemonProcess, policy_dict, write_policy
from tests.service.fuzzing import fuzz_daemon_stateful, with_links

# Scenarios of up to 10 calls each (about a thousand requests, 13 s), each call's case
# valid or invalid by a coin. Whether a step follows a link is decided by a Random that
# schemathesis seeds from the test data, and the links a step can take depend on the
# daemon's answers (a recalibration still running answers 409, a finished one adds a
# version to roll back to): the run is the same only while the answers are. Alone the
# label link was taken with its body intact 4 times in 90 scenarios; in the whole
# suite's ordering (CI's, and three runs here) never, with the same 870 requests each
# time. So a round that did not reach the whole workflow is followed by rounds of valid
# cases only, up to ROUNDS (19 intact labels in 90 scenarios alone; 13 and 20 as the
# second round of two whole-suite runs); every round's answers are checked for server
# errors.
SCENARIOS = 90
ROUNDS = 4


def _valid_x() -> list[list[float]]:
    from regulator.tasks.base import make_family

    fam = make_family("nanosensor")
    x, _ = fam.sample(fam.nominal_environment(), 1, np.random.default_rng(0))
    return [[round(float(v), 4) for v in row] for row in x[0]]


@pytest.fixture(scope="module")
def daemon(tiny_prior: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("stateful-daemon")
    policy = policy_dict(tiny_prior, source={"kind": "http", "queue_size": 256},
                         recalibration={"k_shot": 1, "holdout_per_class": 1})  # fmt: skip
    d = DaemonProcess(write_policy(root / "policy.yaml", policy), root / "state", root / "log")
    try:
        d.start().wait_ready()
        yield d
    finally:
        d.close()


def test_links_name_real_operations(daemon: DaemonProcess) -> None:
    import schemathesis

    spec = with_links(daemon.client.get("/openapi.json").json(), _valid_x())
    links = [
        name
        for ops in spec["paths"].values()
        for op in ops.values()
        for resp in op["responses"].values()
        for name in resp.get("links", {})
    ]
    assert len(links) == 8
    # raises on a link to an unknown operation (and adds the links it infers, in place)
    assert schemathesis.openapi.from_dict(spec).as_state_machine() is not None


def _reached_workflow(ops: Counter[str]) -> bool:
    """A sample was taken and labelled by its id, and a recalibration was asked for."""
    recalibrated = sum(v for k, v in ops.items() if k.startswith("POST /v1/recalibrate 202"))
    return ops["POST /v1/samples 200"] > 0 and ops["POST /v1/feedback 200"] > 0 and recalibrated > 0


@pytest.mark.slow
def test_stateful_sequences_find_no_server_error(daemon: DaemonProcess) -> None:
    ops: Counter[str] = Counter()
    rounds: list[dict[str, object]] = []
    for i in range(ROUNDS):
        report = fuzz_daemon_stateful(
            daemon.url, TOKEN, _valid_x(), max_examples=SCENARIOS, positive_only=i > 0
        )
        out = report.as_dict()
        rounds.append(out)
        assert report.server_errors == [], out
        assert report.scenarios >= SCENARIOS and report.requests >= 2 * SCENARIOS, out
        ops.update(report.by_operation)
        if _reached_workflow(ops):
            break
    # the links reached the workflow, not only refusals
    assert _reached_workflow(ops), (dict(ops), rounds)
    assert daemon.metric("regulator_http_server_errors_total") == 0
    assert daemon.client.get("/readyz").status_code == 200
