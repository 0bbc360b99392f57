"""Issue 12 against real ``regulator run`` processes: schemathesis on the daemon's own
OpenAPI document, 409 rollback, labels checked against the served model, the token never
in logs or state, damaged state at start, SIGTERM on the costliest config, a full disk."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.service.conftest import TOKEN, DaemonProcess, policy_dict, wait_for, write_policy
from tests.service.fuzzing import fuzz_daemon

SAMPLES = "regulator_samples_total"
FUZZ_EXAMPLES = 25  # per operation and mode: a few hundred requests, ~30 s here


def _nanosensor(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from regulator.tasks.base import make_family

    fam = make_family("nanosensor")
    return fam.sample(fam.nominal_environment(), n, np.random.default_rng(seed))


@pytest.fixture(scope="module")
def http_daemon(
    tiny_prior: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("hardening-daemon")
    cfg = write_policy(
        root / "policy.yaml", policy_dict(tiny_prior, source={"kind": "http", "queue_size": 256})
    )
    d = DaemonProcess(cfg, root / "state", root / "daemon.log")
    try:
        d.start().wait_ready()
        yield d
    finally:
        d.close()


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(http_daemon: DaemonProcess) -> None:
    report = fuzz_daemon(http_daemon.url, TOKEN, max_examples=FUZZ_EXAMPLES)
    assert report.requests >= 200, report.as_dict()
    assert report.server_errors == [], report.as_dict()
    assert http_daemon.metric("regulator_http_server_errors_total") == 0
    assert http_daemon.client.get("/readyz").status_code == 200


def test_rollback_with_nothing_to_roll_back_is_409(http_daemon: DaemonProcess) -> None:
    r = http_daemon.post("/v1/rollback")
    assert r.status_code == 409 and r.json()["reason"] == "conflict", r.text
    assert http_daemon.metric("regulator_requests_rejected_total", reason="conflict") >= 1


def test_labels_are_checked_against_the_served_model(http_daemon: DaemonProcess) -> None:
    x, y = _nanosensor(2)
    r = http_daemon.post(
        "/v1/feedback", {"items": [{"sample_id": "poison", "x": [[0.0] * 3] * 3, "y": 0}]}
    )
    assert r.status_code == 422, r.text
    assert [i["reason"] for i in r.json()["rejected"]] == ["bad_shape"]
    r = http_daemon.post(
        "/v1/feedback",
        {
            "items": [
                {"sample_id": "ok", "x": x[0].tolist(), "y": int(y[0])},
                {"sample_id": "bad-class", "x": x[1].tolist(), "y": 999},
            ]
        },
    )
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    assert [i["reason"] for i in r.json()["rejected"]] == ["bad_label"]
    stored = (http_daemon.state_dir / "labels.jsonl").read_text()
    assert '"ok"' in stored and "poison" not in stored and "bad-class" not in stored


def test_docs_are_served_on_loopback(http_daemon: DaemonProcess) -> None:
    assert http_daemon.client.get("/openapi.json").status_code == 200
    assert http_daemon.client.get("/docs").status_code == 200


def test_the_token_never_reaches_logs_or_state(http_daemon: DaemonProcess) -> None:
    # after the other tests (fuzzing sent it on every request), and a few wrong ones
    for wrong in (TOKEN[:-1], TOKEN + "x", TOKEN.upper()):
        http_daemon.client.post("/v1/recalibrate", headers={"Authorization": f"Bearer {wrong}"})
    http_daemon.post("/v1/recalibrate", {"reason": "token test"})
    time.sleep(1.0)
    needles = [TOKEN.encode(), TOKEN[:-1].encode(), TOKEN.upper().encode()]
    files = [http_daemon.log_path, *(p for p in http_daemon.state_dir.rglob("*") if p.is_file())]
    assert len(files) > 3
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"token found in {path}"


def _damaged_state(tmp_path: Path, prior: Path) -> Path:
    """A state dir whose served version (v000003) has flipped weights."""
    from regulator.policy.model import Policy
    from regulator.service.runtime import Runtime

    policy = Policy.model_validate(policy_dict(prior))
    rt = Runtime(policy, tmp_path / "state", inline_jobs=True)
    try:
        for _ in range(2):
            cur = rt.registry.current()
            assert cur is not None
            rt.registry.promote(rt.registry.add(rt.registry.path(cur), parent=cur, trigger="t"))
    finally:
        rt.close()
    weights = tmp_path / "state" / "registry" / "v000003" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    return tmp_path / "state"


def test_run_starts_on_damaged_state_and_says_so(
    tiny_prior: Path, tmp_path: Path, daemons: Any
) -> None:
    state = _damaged_state(tmp_path, tiny_prior)
    d = daemons(policy_dict(tiny_prior), state_dir=state)
    status = d.client.get("/v1/status").json()
    assert status["version"] == "v000002" and status["degraded"] is True
    assert "sha256 mismatch" in json.dumps(status["problems"])
    assert d.metric("regulator_degraded") == 1
    assert d.metric("regulator_registry_quarantined_total") == 1
    wait_for(lambda: d.metric(SAMPLES) > 0, 20, what="samples served")
    assert "sha256 mismatch" in d.log_tail(20_000)


def test_sigterm_is_honoured_promptly_on_the_costliest_config(
    tiny_prior: Path, daemons: Any
) -> None:
    """n_steps at its bound and samples as fast as the policy allows: the daemon used to
    ignore SIGTERM for 30 s with n_steps 100000000 (now refused by check-config)."""
    policy = policy_dict(tiny_prior, model={"prior": str(tiny_prior), "n_steps": 1024})
    policy["source"]["rate_hz"] = 100_000
    d = daemons(policy)
    wait_for(lambda: d.metric(SAMPLES) > 0, 30, what="samples served")
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait(30) == 0
    took = time.monotonic() - t0
    assert took < 10, f"SIGTERM took {took:.1f} s"  # generous: two shared cores


# -- a full disk ------------------------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a size-limited tmpfs needs root")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """Write a filler file leaving about ``leave`` bytes free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    filler = disk / "filler"
    with open(filler, "ab") as f, contextlib.suppress(OSError):
        f.write(b"\0" * max(0, free - leave))
    return filler


def _label_ids(state: Path) -> set[str]:
    out = set()
    for line in (state / "labels.jsonl").read_text().splitlines():
        with contextlib.suppress(ValueError, KeyError):
            out.add(json.loads(line)["sample_id"])
    return out


@pytest.mark.slow
def test_full_disk_serves_on_refuses_labels_and_recovers(
    tiny_prior: Path, tmp_path: Path, daemons: Any
) -> None:
    with _tmpfs(tmp_path / "disk", "6m") as disk:
        state = disk / "state"
        policy = policy_dict(tiny_prior, storage={"reserve_bytes": 512 * 1024})
        d = daemons(policy, state_dir=state)
        x, y = _nanosensor(40)

        def feed(tag: str, n: int) -> list[Any]:
            return [
                d.post("/v1/feedback", {"items": [
                    {"sample_id": f"{tag}{i}", "x": x[i].tolist(), "y": int(y[i])}]})
                for i in range(n)
            ]  # fmt: skip

        acked = {f"a{i}" for i, r in enumerate(feed("a", 10)) if r.status_code == 200}
        assert len(acked) == 10
        filler = _fill(disk, leave=256 * 1024)  # now below the reserve
        refused = feed("b", 5)
        assert all(r.status_code == 507 for r in refused), [r.text for r in refused]
        assert refused[0].json()["reason"] == "disk_full"
        n0 = d.metric(SAMPLES)
        wait_for(lambda: d.metric(SAMPLES) > n0 + 20, 20, what="serving on a full disk")
        assert d.metric("regulator_storage_refused_total", what="label") >= 5
        status = d.client.get("/v1/status").json()
        assert status["degraded"] is True and status["storage"]["full"] is True
        assert d.client.get("/readyz").status_code == 200

        filler.unlink()  # space returns: no restart needed
        resumed = feed("c", 5)
        assert all(r.status_code == 200 for r in resumed), [r.text for r in resumed]
        acked |= {f"c{i}" for i in range(5)}
        wait_for(lambda: not d.client.get("/v1/status").json()["storage"]["full"], 10,
                 what="storage no longer full")  # fmt: skip

        filler = _fill(disk, leave=64 * 1024)  # full again, and a restart on it
        d.signal(signal.SIGTERM)
        assert d.wait(60) == 0
        d2 = daemons(policy, state_dir=state)
        wait_for(lambda: d2.metric(SAMPLES) > 0, 30, what="serving after a restart on a full disk")
        assert d2.client.get("/v1/status").json()["storage"]["full"] in (True, False)
        d2.kill()
        filler.unlink()
        assert acked <= _label_ids(state), acked - _label_ids(state)
        from regulator.registry import Registry

        reg = Registry(state / "registry")
        for v in reg.versions():
            reg.verify(v.version)
