"""The fault matrix's pieces, against real ``regulator run`` processes: kill -9 at random
moments while labels stream in and recalibrations run, damaged state at start, a full
disk, a flooded and a stalled source. Each returns the figures it measured.

Used by ``tests/service/test_fault_matrix.py`` (a few kills) and
``bench/fault_matrix.py`` (30 kills, the report).
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from regulator import modelfolder
from tests.service.conftest import DaemonProcess, policy_dict, wait_for, write_policy


def nanosensor(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from regulator.tasks.base import make_family

    fam = make_family("nanosensor")
    return fam.sample(fam.nominal_environment(), n, np.random.default_rng(seed))


def busy_policy(prior: Path, **sections: Any) -> dict[str, Any]:
    """Shifts every 10 s, labels for half the samples, every drift alarm recalibrates."""
    data = policy_dict(
        prior,
        source={
            "kind": "simulated",
            "family": "nanosensor",
            "rate_hz": 50,
            "schedule": {"kind": "abrupt", "period_s": 10},
            "label_fraction": 0.5,
            "label_delay_samples": 2,
        },
        rules=[
            {
                "name": "drift",
                "condition": {"signal": "drift_detected"},
                "action": "recalibrate_supervised",
                "cooldown_s": 0,
            }
        ],
        recalibration={"k_shot": 3, "holdout_per_class": 2, "max_per_hour": 3600,
                       "timeout_s": 30},
    )  # fmt: skip
    data.update(sections)
    return data


def label_ids(state: Path) -> set[str]:
    """Sample ids in the label file (a torn last line is skipped)."""
    path = state / "labels.jsonl"
    out: set[str] = set()
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                out.add(json.loads(line)["sample_id"])
    return out


def corrupted_versions(state: Path) -> list[str]:
    """Registry versions whose files do not match their manifest."""
    reg = state / "registry"
    bad = []
    for v in sorted(reg.glob("v*")) if reg.is_dir() else []:
        try:
            modelfolder.verify(v)
        except (OSError, ValueError) as exc:
            bad.append(f"{v.name}: {exc}")
    return bad


def orphans(state: Path) -> int:
    return len(list(state.glob("candidate-*"))) if state.is_dir() else 0


class Feeder:
    """Posts labelled samples (one per request) until stopped; remembers which were
    acknowledged (answered 200), the only labels the daemon promised to keep."""

    def __init__(self, d: DaemonProcess, tag: str, x: np.ndarray, y: np.ndarray) -> None:
        self.d, self.tag, self.x, self.y = d, tag, x, y
        self.acked: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            sid = f"{self.tag}-{i}"
            body = {"items": [{"sample_id": sid, "x": self.x[i % len(self.x)].tolist(),
                               "y": int(self.y[i % len(self.y)])}]}  # fmt: skip
            with contextlib.suppress(Exception):
                if self.d.post("/v1/feedback", body, timeout=5).status_code == 200:
                    self.acked.add(sid)
            i += 1
            time.sleep(0.02)

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def kill_cycles(
    prior: Path, root: Path, n: int, seed: int = 0, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """``n`` times: start, stream labels, maybe ask for a recalibration or send SIGHUP,
    kill -9 after a random 0.5-5 s; then check versions, labels and leftovers."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    state = root / "state"
    cfg = write_policy(root / "policy.yaml", busy_policy(prior))
    x, y = nanosensor(200, seed=seed)
    acked: set[str] = set()
    ready_s: list[float] = []
    phases: Counter[str] = Counter()
    orphans_at_start: list[int] = []
    corrupted: list[str] = []
    lost_after: list[int] = []
    for i in range(n):
        orphans_at_start.append(orphans(state))
        d = DaemonProcess(cfg, state, root / f"daemon{i}.log")
        t0 = time.monotonic()
        d.start().wait_ready(120)
        ready_s.append(time.monotonic() - t0)
        with Feeder(d, f"k{i}", x, y) as feeder:
            if rng.random() < 0.5:
                d.post("/v1/recalibrate", {"reason": "fault matrix"})
            if rng.random() < 0.2:
                d.signal(signal.SIGHUP)
                phases["after SIGHUP"] += 1
            time.sleep(rng.uniform(0.5, 5.0))
            try:
                pending = d.client.get("/v1/status", timeout=5).json().get("pending_jobs")
            except Exception:
                pending = None
            phases["during a recalibration" if pending else "serving"] += 1
            d.kill()  # SIGKILL
        d.client.close()
        acked |= feeder.acked
        corrupted += [f"kill {i}: {c}" for c in corrupted_versions(state)]
        lost_after.append(len(acked - label_ids(state)))
        say(f"kill {i + 1}/{n}: ready in {ready_s[-1]:.1f} s, {len(acked)} labels acknowledged, "
            f"lost {lost_after[-1]}, orphans before start {orphans_at_start[-1]}")  # fmt: skip
    d = DaemonProcess(cfg, state, root / "daemon-final.log")
    t0 = time.monotonic()
    d.start().wait_ready(120)
    ready_s.append(time.monotonic() - t0)
    orphans_after = orphans(state)
    versions = d.client.get("/v1/models").json()["versions"]
    d.signal(signal.SIGTERM)
    d.wait(60)
    d.close()
    lost = sorted(acked - label_ids(state))
    return {
        "kills": n,
        "phases": dict(phases),
        "labels_acknowledged": len(acked),
        "labels_lost": len(lost),
        "versions": len(versions),
        "versions_corrupted": len(corrupted),
        "corrupted": corrupted[:10],
        "orphan_folders_left_by_kills": sum(orphans_at_start),
        "orphan_folders_after_restart": orphans_after,
        "ready_s": {
            "mean": float(np.mean(ready_s)),
            "max": float(np.max(ready_s)),
            "n": len(ready_s),
        },
    }


# -- damaged state at start ------------------------------------------------------------------


def _flip(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


DAMAGE: dict[str, tuple[Callable[[Path], Any], str]] = {
    # case: (what is done to the state directory, the version that must serve)
    "served weights flipped": (lambda s: _flip(s / "registry/v000003/weights.safetensors"),
                               "v000002"),
    "served weights zeroed": (
        lambda s: (s / "registry/v000003/weights.safetensors").write_bytes(
            bytes((s / "registry/v000003/weights.safetensors").stat().st_size)),
        "v000002",
    ),
    "served weights truncated": (
        lambda s: _truncate(s / "registry/v000003/weights.safetensors"), "v000002"),
    "served manifest deleted": (lambda s: (s / "registry/v000003/manifest.json").unlink(),
                                "v000002"),
    "served manifest truncated": (lambda s: _truncate(s / "registry/v000003/manifest.json"),
                                  "v000002"),
    "served lineage garbled": (lambda s: (s / "registry/v000003/lineage.json").write_text("{x"),
                               "v000002"),
    "served folder deleted": (lambda s: shutil.rmtree(s / "registry/v000003"), "v000002"),
    "pointer garbled": (lambda s: (s / "registry/current").write_bytes(b"\0junk"), "v000003"),
    "pointer dangling": (
        lambda s: (s / "registry/current").write_text('{"current": "v000099"}'), "v000003"),
    "older version damaged": (lambda s: _flip(s / "registry/v000001/weights.safetensors"),
                              "v000003"),
    "every version damaged": (
        lambda s: [_flip(s / f"registry/{v}/weights.safetensors")
                   for v in ("v000001", "v000002", "v000003")],
        "v000004",
    ),
    "event log truncated mid-line": (lambda s: _truncate(s / "events.jsonl", 0.7), "v000003"),
    "label file truncated mid-line": (lambda s: _truncate(s / "labels.jsonl", 0.7), "v000003"),
    "label file with garbage lines": (
        lambda s: _append(s / "labels.jsonl", b"\xff\xfe garbage\n{\"y\": 1}\n"),
        "v000003",
    ),
}  # fmt: skip


def three_versions(prior: Path, state: Path) -> None:
    """A state directory serving v000003 (v000001 the prior, each a copy), with labels."""
    from regulator.policy.model import Policy
    from regulator.service.runtime import Runtime

    rt = Runtime(Policy.model_validate(policy_dict(prior)), state, inline_jobs=True)
    try:
        for _ in range(2):
            cur = rt.registry.current()
            assert cur is not None
            rt.registry.promote(rt.registry.add(rt.registry.path(cur), parent=cur, trigger="t"))
        x, y = nanosensor(20)
        rt.add_labels([(f"l{i}", int(y[i]), x[i]) for i in range(20)])
    finally:
        rt.close()


def damaged_starts(prior: Path, root: Path, say: Callable[[str], None] = print) -> list[dict]:
    """Each DAMAGE case through a real daemon: what it serves, what it says, how fast."""
    out = []
    for k, (case, (damage, expected)) in enumerate(DAMAGE.items()):
        state = root / f"damaged{k}"
        three_versions(prior, state)
        damage(state)
        d = DaemonProcess(write_policy(root / f"p{k}.yaml", policy_dict(prior)), state,
                          root / f"damaged{k}.log")  # fmt: skip
        t0 = time.monotonic()
        try:
            d.start().wait_ready(120)
            ready = time.monotonic() - t0
            wait_for(lambda d=d: d.metric("regulator_samples_total") > 0, 30, what="samples")
            status = d.client.get("/v1/status").json()
            row = {"case": case, "started": True, "serves": status["version"],
                   "expected": expected, "degraded": status["degraded"],
                   "problems": len(status["problems"]), "ready_s": round(ready, 2),
                   "labels": status["labels_buffered"]}  # fmt: skip
        except AssertionError as exc:
            row = {"case": case, "started": False, "error": str(exc)[-300:]}
        finally:
            d.close()
        say(f"damaged start: {row}")
        out.append(row)
    return out


# -- a full disk, a flooded and a stalled source -----------------------------------------------


def full_disk_run(prior: Path, disk: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """On a mounted size-limited file system ``disk``: fill it while labels stream in and
    recalibrations are asked for, keep it full a while, free it; then restart on it full."""
    import os

    state = disk / "state"
    cfg = write_policy(disk.parent / "full-policy.yaml",
                       busy_policy(prior, storage={"reserve_bytes": 512 * 1024}))  # fmt: skip
    x, y = nanosensor(200)
    d = DaemonProcess(cfg, state, disk.parent / "full-daemon.log").start()
    d.wait_ready(120)
    out: dict[str, Any] = {}
    with Feeder(d, "f", x, y) as feeder:
        time.sleep(3)
        st = os.statvfs(disk)
        filler = disk / "filler"
        with open(filler, "wb") as f, contextlib.suppress(OSError):
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - 128 * 1024))
        n0 = d.metric("regulator_samples_total")
        acked0 = len(feeder.acked)
        d.post("/v1/recalibrate", {"reason": "full disk"})
        time.sleep(8)
        out["samples_served_while_full"] = d.metric("regulator_samples_total") - n0
        out["labels_acknowledged_while_full"] = len(feeder.acked) - acked0
        out["label_writes_refused"] = d.metric("regulator_storage_refused_total", what="label")
        out["writes_refused_by_kind"] = {
            k: d.metric("regulator_storage_refused_total", what=k)
            for k in ("label", "event", "version", "monitors")
        }
        status = d.client.get("/v1/status").json()
        out["status_said_full"] = status["storage"]["full"]
        out["ready_while_full"] = d.client.get("/readyz").status_code == 200
        filler.unlink()
        acked1 = len(feeder.acked)
        time.sleep(4)
        out["labels_acknowledged_after_space_returned"] = len(feeder.acked) - acked1
        out["recovered_without_restart"] = out["labels_acknowledged_after_space_returned"] > 0
        with open(filler, "wb") as f, contextlib.suppress(OSError):
            st = os.statvfs(disk)
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - 64 * 1024))
    acked = set(feeder.acked)
    d.kill()
    d.close()
    d2 = DaemonProcess(cfg, state, disk.parent / "full-daemon2.log").start()
    t0 = time.monotonic()
    try:
        d2.wait_ready(120)
        out["restart_on_full_disk_ready_s"] = round(time.monotonic() - t0, 2)
    except AssertionError as exc:
        out["restart_on_full_disk_ready_s"] = None
        out["restart_error"] = str(exc)[-300:]
    finally:
        d2.close()
    filler.unlink()
    out["labels_acknowledged"] = len(acked)
    out["labels_lost"] = len(acked - label_ids(state))
    out["versions_corrupted"] = len(corrupted_versions(state))
    say(f"full disk: {out}")
    return out


def flood_and_stall(prior: Path, root: Path) -> dict[str, Any]:
    """An http source pushed 20,000 samples (200 requests of 100) as fast as one client
    can, then nothing for 35 s (longer than /healthz's 30 s window): still healthy,
    what the queue cannot hold refused and counted."""
    cfg = write_policy(root / "http-policy.yaml",
                       policy_dict(prior, source={"kind": "http", "queue_size": 256}))  # fmt: skip
    d = DaemonProcess(cfg, root / "http-state", root / "http-daemon.log").start()
    d.wait_ready(120)
    x, _ = nanosensor(100)
    body = {"samples": [{"x": x[i].tolist()} for i in range(100)]}
    codes: Counter[int] = Counter()
    accepted = 0
    try:
        for _ in range(200):
            r = d.post("/v1/samples", body, timeout=60)
            codes[r.status_code] += 1
            if r.status_code == 200:
                accepted += r.json()["accepted"]
        refused = d.metric("regulator_samples_rejected_total", reason="queue_full")
        time.sleep(35)
        healthy = d.client.get("/healthz").status_code == 200
        ready = d.client.get("/readyz").status_code == 200
        served = d.metric("regulator_samples_total")
    finally:
        d.close()
    return {"pushed": 20_000, "accepted": accepted, "refused_queue_full": refused,
            "codes": dict(codes), "served": served, "healthy_after_35s_stall": healthy,
            "ready_after_stall": ready}  # fmt: skip
