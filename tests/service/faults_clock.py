"""The wall clock stepping forward and back (an NTP step, a wrong RTC) under a real
daemon, and a restart with the clock behind the stamps already on disk.

The step is made inside the daemon's processes only, by a ``sitecustomize`` put on
their ``PYTHONPATH``: it adds an offset, read from a file that the test rewrites, to
``time.time``, ``time.time_ns`` and ``datetime.datetime.now/utcnow/today`` (what
the daemon, APScheduler, uvicorn and logging read), while ``time.monotonic`` and
sleeps stay true, as they do on a real machine when the wall clock is stepped. (The
machine's own clock is shared; libfaketime 0.9.10 with ``FAKETIME_DONT_FAKE_MONOTONIC``
makes Python's ``time.sleep`` fail with EINVAL, and without it fakes the monotonic
clock too.) Clock reads from C code other than these are not moved.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.service.conftest import DaemonProcess, write_policy
from tests.service.faults import Feeder, busy_policy, corrupted_versions, label_ids, nanosensor

OFFSET_ENV = "REGULATOR_TEST_CLOCK_OFFSET_FILE"

SITECUSTOMIZE = '''
"""Test only: the wall clock offset by the seconds in $%(env)s (re-read every 0.2 s)."""
import datetime as _dt
import os as _os
import time as _t

_path = _os.environ["%(env)s"]
_real_time, _real_ns, _mono = _t.time, _t.time_ns, _t.monotonic
_cache = [0.0, -1.0]


def _offset():
    now = _mono()
    if now - _cache[1] > 0.2:
        try:
            with open(_path) as f:
                _cache[0] = float(f.read().strip() or 0)
        except (OSError, ValueError):
            pass
        _cache[1] = now
    return _cache[0]


_t.time = lambda: _real_time() + _offset()
_t.time_ns = lambda: _real_ns() + int(_offset() * 1e9)
_real_dt = _dt.datetime


class _Meta(type):
    """Real datetimes are instances of the stepped class (APScheduler checks)."""

    def __instancecheck__(cls, obj):
        return isinstance(obj, _real_dt)

    def __subclasscheck__(cls, sub):
        return issubclass(sub, _real_dt)


class _Stepped(_real_dt, metaclass=_Meta):
    @classmethod
    def now(cls, tz=None):
        return _real_dt.fromtimestamp(_t.time(), tz)

    @classmethod
    def utcnow(cls):
        return _real_dt.fromtimestamp(_t.time(), _dt.timezone.utc).replace(tzinfo=None)

    @classmethod
    def today(cls):
        return _real_dt.fromtimestamp(_t.time())


_dt.datetime = _Stepped
''' % {"env": OFFSET_ENV}  # noqa: UP031 (str.format: the file has braces of its own)


class SteppedClock:
    """A wall-clock offset (seconds) for the daemons started with :meth:`env`."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "clock-shim"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.file = self.dir / "offset"
        self.set(0.0)

    def set(self, offset_s: float) -> None:
        self.file.write_text(f"{offset_s}\n")

    def env(self) -> dict[str, str]:
        import os

        path = [str(self.dir), *filter(None, [os.environ.get("PYTHONPATH")])]
        return {"PYTHONPATH": os.pathsep.join(path), OFFSET_ENV: str(self.file)}


DAY = 86_400.0

# (phase, wall-clock offset during it, restart the daemon at its start)
PHASES: tuple[tuple[str, float, bool], ...] = (
    ("steady", 0.0, False),
    ("stepped forward 1 day", DAY, False),
    ("stepped back 2 days (1 day behind)", -DAY, False),
    ("restarted 1 day behind", -DAY, True),
    ("clock right again", 0.0, False),
)


def _events(state: Path) -> list[dict[str, Any]]:
    out = []
    for line in (state / "events.jsonl").read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def clock_jumps(
    prior: Path,
    root: Path,
    phase_s: float = 20.0,
    max_per_hour: int = 3,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The daemon through :data:`PHASES` (``phase_s`` each) with an ``alert_only``
    schedule every 2 s, a supervised recalibration schedule every 4 s (accepted
    whatever the score), drift rules, and labels streaming in. Per phase: samples
    served, schedule runs (alert events), recalibrations that did work, /healthz and
    /readyz answers; at the end: labels lost, versions corrupted, recalibrations that
    did work per process against ``max_per_hour`` (each run is under an hour of
    monotonic time), the stamps as they were written."""
    root.mkdir(parents=True, exist_ok=True)
    clock = SteppedClock(root)
    state = root / "state"
    policy = busy_policy(
        prior,
        schedules=[
            {"id": "beat", "kind": "interval", "every_s": 2, "action": "alert_only"},
            {"id": "recal", "kind": "interval", "every_s": 4,
             "action": "recalibrate_supervised"},
        ],
    )  # fmt: skip
    policy["recalibration"].update({"max_per_hour": max_per_hour, "acceptance_margin": 1.0})
    cfg = write_policy(root / "policy.yaml", policy)
    x, y = nanosensor(200)
    acked: set[str] = set()
    rows: list[dict[str, Any]] = []
    worked_per_process: list[float] = []
    d: DaemonProcess | None = None
    try:
        for k, (name, offset, restart) in enumerate(PHASES):
            clock.set(offset)
            if d is None or restart:
                if d is not None:
                    worked_per_process.append(_worked(d))
                    d.close()  # kill -9, as a crash would
                d = DaemonProcess(cfg, state, root / f"daemon{k}.log", extra_env=clock.env())
                t0 = time.monotonic()
                d.start().wait_ready(120)
                ready = round(time.monotonic() - t0, 2)
            else:
                ready = None
            time.sleep(0.5)  # the offset file is re-read every 0.2 s
            n_events = len(_events(state))
            m0 = _worked(d), d.metric("regulator_samples_total")
            health: list[int] = []
            with Feeder(d, f"c{k}", x, y) as feeder:
                t_end = time.monotonic() + phase_s
                while time.monotonic() < t_end:
                    health.append(d.client.get("/healthz").status_code)
                    time.sleep(0.5)
            acked |= feeder.acked
            ev = _events(state)[n_events:]
            row = {
                "phase": name,
                "offset_s": offset,
                "ready_s": ready,
                "samples_served": d.metric("regulator_samples_total") - m0[1],
                "schedule_runs": sum(1 for e in ev if e["kind"] == "alert"),
                "recalibrations_that_worked": _worked(d) - m0[0],
                "healthz_200_share": sum(c == 200 for c in health) / len(health),
                "readyz": d.client.get("/readyz").status_code,
                "event_ts_minus_real_s": round(ev[-1]["ts"] - time.time(), 0) if ev else None,
                "labels_acknowledged": len(feeder.acked),
            }
            rows.append(row)
            say(f"clock: {row}")
        worked_per_process.append(_worked(d))
    finally:
        if d is not None:
            d.close()
    stamps = [json.loads((v / "lineage.json").read_text())["created_at"]
              for v in sorted((state / "registry").glob("v*"))]  # fmt: skip
    return {
        "phase_s": phase_s,
        "phases": rows,
        "labels_acknowledged": len(acked),
        "labels_lost": len(acked - label_ids(state)),
        "versions_corrupted": len(corrupted_versions(state)),
        "recalibrations_that_worked_per_process": worked_per_process,
        "max_per_hour": max_per_hour,
        "lineage_created_at_minus_now_s": [round(s - time.time()) for s in stamps],
    }


def _worked(d: DaemonProcess) -> float:
    """Recalibrations that did work (accepted, rejected or failed; not skipped)."""
    return sum(d.metric("regulator_recalibrations_total", outcome=o)
               for o in ("accepted", "rejected", "failed"))  # fmt: skip
