"""kill -9 that lands inside a registry write, against real ``regulator run`` processes.

Each cycle starts the daemon with ``REGULATOR_REGISTRY_FAULT`` naming one point of a
registry write (:mod:`regulator.registry.faultpoint`), streams labels and asks for
recalibrations (accepted whatever their score: ``acceptance_margin`` 1) and, for the
lineage point, rollbacks, until the daemon kills itself at that point; the log line it
writes first proves where. Retention is tight (keep 2, 1 served) so that pruning runs.
Used by ``tests/service/test_fault_matrix.py`` and ``bench/fault_matrix.py``.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from regulator.registry.faultpoint import ENV
from tests.service.conftest import DaemonProcess, write_policy
from tests.service.faults import (
    Feeder,
    busy_policy,
    corrupted_versions,
    label_ids,
    nanosensor,
    orphans,
)

# Every point a running daemon's writes pass (quarantine.moved only at a damaged start:
# tests/test_registry.py kills there). ``add.start`` gets a timer, to land in the copy.
DAEMON_POINTS = (
    "add.start",
    "add.copied",
    "add.staged",
    "add.renamed",
    "commit.before",
    "commit.written",
    "sync.lineage",
    "prune.renamed",
    "prune.deleted",
)


def registry_debris(state: Path) -> int:
    """Temporary leftovers of an interrupted registry write (removed at the next open)."""
    reg = state / "registry"
    return len(list(reg.glob(".tmp-*"))) if reg.is_dir() else 0


def lineage_mismatches(state: Path) -> list[str]:
    """Versions whose lineage.json status disagrees with the pointer, or that do not
    describe themselves; and a pointer naming a missing version."""
    reg = state / "registry"
    ptr = json.loads((reg / "current").read_text())
    bad = [] if (reg / str(ptr["current"])).is_dir() else [f"current -> {ptr['current']}"]
    for v in sorted(reg.glob("v*")):
        lin = json.loads((v / "lineage.json").read_text())
        want = "rolled_back" if v.name in ptr.get("rolled_back", []) else "good"
        if lin.get("version") != v.name or lin.get("status") != want:
            bad.append(f"{v.name}: {lin.get('version')} {lin.get('status')} (pointer: {want})")
    return bad


def registry_kill_cycles(
    prior: Path,
    root: Path,
    n: int,
    points: Sequence[str] = DAEMON_POINTS,
    seed: int = 0,
    wait_s: float = 90.0,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """``n`` kills, cycling through ``points``; returns the figures of the matrix."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    state = root / "state"
    policy = busy_policy(prior, storage={"keep_versions": 2, "keep_served_versions": 1})
    policy["recalibration"]["acceptance_margin"] = 1.0
    cfg = write_policy(root / "policy.yaml", policy)
    x, y = nanosensor(200, seed=seed)
    acked: set[str] = set()
    ready_s: list[float] = []
    landed: Counter[str] = Counter()
    missed: list[str] = []
    corrupted: list[str] = []
    mismatched: list[str] = []
    debris = orphans_left = 0
    first = DaemonProcess(cfg, state, root / "daemon-bootstrap.log")  # the kills then
    first.start().wait_ready(120)  # land in recalibrations' writes, not the bootstrap's
    first.signal(signal.SIGTERM)
    first.wait(60)
    first.close()
    for i in range(n):
        point = points[i % len(points)]
        action = f"kill+{rng.uniform(0.0, 0.02):.4f}" if point == "add.start" else "kill"
        log = root / f"daemon{i}.log"
        d = DaemonProcess(cfg, state, log, extra_env={ENV: f"{point}:{action}"})
        t0 = time.monotonic()
        d.start()
        with contextlib.suppress(AssertionError):  # it may die at its point while starting
            d.wait_ready(120)
            ready_s.append(time.monotonic() - t0)
        with Feeder(d, f"r{i}", x, y) as feeder:
            deadline = time.monotonic() + wait_s
            while d.proc is not None and d.proc.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    d.post("/v1/recalibrate", {"reason": "fault matrix"}, timeout=5)
                    if point == "sync.lineage":
                        d.post("/v1/rollback", timeout=5)
                time.sleep(2.0)
        reached = f"registry fault point {point} reached" in log.read_text(errors="replace")
        if d.proc is not None and d.proc.poll() == -9 and reached:
            landed[point] += 1
        else:
            missed.append(point)
        d.close()  # SIGKILL if it is still running
        acked |= feeder.acked
        corrupted += [f"kill {i} ({point}): {c}" for c in corrupted_versions(state)]
        debris += registry_debris(state)
        orphans_left += orphans(state)
        lost = len(acked - label_ids(state))
        say(f"registry kill {i + 1}/{n} at {point} ({action}): "
            f"{'landed' if reached else 'NOT reached'}; {len(acked)} labels acknowledged, "
            f"lost {lost}")  # fmt: skip
    d = DaemonProcess(cfg, state, root / "daemon-final.log")
    t0 = time.monotonic()
    d.start().wait_ready(120)
    ready_s.append(time.monotonic() - t0)
    status = d.client.get("/v1/status").json()
    versions = d.client.get("/v1/models").json()["versions"]
    orphans_after = orphans(state) + registry_debris(state)
    mismatched = lineage_mismatches(state)
    d.close()
    return {
        "kills": n,
        "landed_at": dict(landed),
        "not_reached": missed,
        "labels_acknowledged": len(acked),
        "labels_lost": len(acked - label_ids(state)),
        "versions": len(versions),
        "versions_corrupted": len(corrupted),
        "corrupted": corrupted[:10],
        "lineage_mismatches_after_restart": mismatched,
        "problems_after_restart": status["problems"],
        "registry_debris_left_by_kills": debris,
        "orphan_folders_left_by_kills": orphans_left,
        "orphan_folders_after_restart": orphans_after,
        "ready_s": {
            "mean": float(np.mean(ready_s)),
            "max": float(np.max(ready_s)),
            "n": len(ready_s),
        },
    }
