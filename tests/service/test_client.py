"""``regulator.client`` against a real daemon process over real HTTP (the client lives
at ``regulator/client.py``; it is tested here, beside the daemon fixtures)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from regulator.client import Client, FeedbackResult
from regulator.errors import (
    ApiError,
    AuthError,
    ConflictError,
    DaemonUnreachableError,
    RequestRejectedError,
)
from tests.service.conftest import (
    TOKEN,
    DaemonProcess,
    free_port,
    policy_dict,
    write_policy,
)


@pytest.fixture(scope="module")
def daemon(tiny_prior: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("client-daemon")
    policy = policy_dict(
        tiny_prior,
        source={"kind": "http", "queue_size": 64},
        logging={"level": "INFO", "format": "text"},  # the daemon's text log, checked below
    )
    cfg = write_policy(root / "policy.yaml", policy)
    d = DaemonProcess(cfg, root / "state", root / "daemon.log")
    try:
        d.start().wait_ready()
        yield d
    finally:
        d.close()


def _samples(n: int) -> tuple[np.ndarray, np.ndarray]:
    from regulator.tasks.base import make_family

    fam = make_family("nanosensor")
    return fam.sample(fam.nominal_environment(), n, np.random.default_rng(3))


def test_reads_health_status_models_and_metrics(daemon: DaemonProcess) -> None:
    with Client(daemon.url) as c:  # reading needs no token
        assert c.healthy() and c.ready()
        status = c.status()
        assert status["device"] == "dev-test" and status["version"] == "v000001"
        [model] = c.models()
        assert model["version"] == "v000001" and model["serving"] is True
        assert 'regulator_samples_total{device="dev-test"}' in c.metrics()


def test_pushes_samples_then_labels_them(daemon: DaemonProcess) -> None:
    x, y = _samples(4)
    with Client(daemon.url, token=TOKEN) as c:
        served0 = daemon.metric("regulator_samples_total")
        pushed = c.push_samples(x, ids=[f"c{i}" for i in range(4)])  # numpy in, JSON out
        assert pushed.accepted == 4 and pushed.ids == ["c0", "c1", "c2", "c3"]
        assert pushed.rejected == [] and pushed.pending == []
        # the answer came once they were served, with their predictions in order
        assert [p["sample_id"] for p in pushed.predictions] == pushed.ids
        assert {p["version"] for p in pushed.predictions} == {"v000001"}
        assert all(len(p["outputs"]) >= 2 for p in pushed.predictions)  # one per class
        assert pushed.recalibration == "idle"
        assert daemon.metric("regulator_samples_total") >= served0 + 4
        queued = c.push_samples(x[:1], ids=["q0"], wait=False)  # answered once queued
        assert queued.pending == ["q0"] and queued.predictions == []
        labels0 = daemon.metric("regulator_labels_total")
        assert c.label("c0", int(y[0])) == FeedbackResult(accepted=1)
        got = c.feedback(
            [{"sample_id": "c1", "y": int(y[1])}, {"x": x[2], "y": int(y[2])}]  # by id, with x
        )
        assert got == FeedbackResult(accepted=2)
        assert daemon.metric("regulator_labels_total") == labels0 + 3
        # one label for a sample the daemon never saw: listed as refused beside the good one
        part = c.feedback([{"sample_id": "c3", "y": int(y[3])}, {"sample_id": "nope", "y": 0}])
        assert part.accepted == 1 and [r["index"] for r in part.rejected] == [1]
        with pytest.raises(RequestRejectedError):  # nothing accepted: 422
            c.label("never-pushed", 0)
        # one good and one malformed sample: 200 with the refusal listed by index
        mixed = c.push_samples([x[3], [[1.0, 2.0], [3.0]]])
        assert mixed.accepted == 1 and [r["index"] for r in mixed.rejected] == [1]


def test_recalibrate_and_rollback_answer(daemon: DaemonProcess) -> None:
    with Client(daemon.url, token=TOKEN) as c:
        assert "scheduled" in c.recalibrate(reason="client test")
        with pytest.raises(ConflictError) as none:
            c.rollback()  # one version only: nothing to roll back to
        assert none.value.status == 409


def test_token_from_the_environment(daemon: DaemonProcess, monkeypatch: Any) -> None:
    monkeypatch.setenv("REGULATOR_TOKEN", TOKEN)
    with Client(daemon.url) as c:
        assert "scheduled" in c.recalibrate()


def test_errors_are_typed(daemon: DaemonProcess, monkeypatch: Any) -> None:
    monkeypatch.delenv("REGULATOR_TOKEN", raising=False)
    x, _ = _samples(1)
    with Client(daemon.url, token="wrong-token") as c, pytest.raises(AuthError) as auth:
        c.push_samples(x)
    assert auth.value.status == 401 and isinstance(auth.value, PermissionError)
    with Client(daemon.url) as c, pytest.raises(AuthError):  # no token at all
        c.rollback()
    with Client(daemon.url, token=TOKEN) as c:
        with pytest.raises(RequestRejectedError) as bad:
            c.push_samples([[[1.0, 2.0], [3.0]]])  # every sample refused (ragged): 422
        assert bad.value.status == 422 and isinstance(bad.value, ValueError)
        with pytest.raises(RequestRejectedError):
            c.feedback([])  # an empty list is not a body the route takes
        with pytest.raises(ApiError) as missing:
            c._json("GET", "/v1/no-such-route")
        assert missing.value.status == 404 and not isinstance(missing.value, AuthError)
    with Client(f"http://127.0.0.1:{free_port()}", timeout=2.0) as c:
        with pytest.raises(DaemonUnreachableError) as down:
            c.status()
        assert isinstance(down.value, ConnectionError)


def test_the_daemon_logs_text_lines_when_asked(daemon: DaemonProcess) -> None:
    lines = [line for line in daemon.log_tail(100_000).splitlines() if line.strip()]
    ours = [line for line in lines if re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z [A-Z]+ \S+ \[", line)]
    assert any(" uvicorn.error [dev-test] " in line for line in ours)  # uvicorn's too
    assert any(" regulator.service.daemon [dev-test] " in line for line in ours)
    assert not any(line.lstrip().startswith("{") for line in lines)  # no JSON
    assert "\x1b" not in daemon.log_tail(100_000)  # no colour escapes
