"""Soak: many samples with recurring shifts; are memory, files, threads and disk flat?

Run: ``python bench/soak.py [--samples 1000000] [--seconds 900] [--daemon-seconds 300]``
(writes bench/results/soak.json and soak.md). It stops at whichever bound comes first
and says how far it got.

- replay: the daemon's :class:`Runtime` in this process, in simulated time (20 samples
  per simulated second), fed by the simulated nanosensor environment with a recurring
  shift every 5,000 samples, labels for 30 % of the samples after 10, the default
  rules (drift and low accuracy recalibrate) and default retention; served 64 at a
  time, as the daemon's main loop does;
- daemon: a real ``regulator run`` with the same environment paced at 2,000 samples/s,
  sampled from /proc (RSS, open files, threads) and its metrics.

Each quantity is sampled along the run; its slope is a least-squares line over the
second half (after warm-up), given as the change it predicts over that half relative
to its mean there: "flat within 10 %" means |change| <= 10 %.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from regulator.policy.model import Policy  # noqa: E402
from regulator.service.runtime import Runtime  # noqa: E402
from regulator.service.storage import tree_bytes  # noqa: E402
from regulator.tasks.sources import FeedbackChannel, make_source  # noqa: E402
from tests.service.conftest import DaemonProcess, write_policy  # noqa: E402

OUT = Path(__file__).parent / "results"
SHIFT_EVERY = 5_000
RATE_HZ = 20.0


def _proc(pid: int | str = "self") -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "threads": float(fields["Threads"]),
        "open_files": float(len(os.listdir(f"/proc/{pid}/fd"))),
    }


def slopes(rows: list[dict[str, float]], x: str, keys: list[str]) -> dict[str, Any]:
    """Per key: the change a least-squares line predicts over the second half, in % of
    the mean there (and the raw first/last values)."""
    half = rows[len(rows) // 2 :]
    xs = np.array([r[x] for r in half], dtype=float)
    out = {}
    for k in keys:
        ys = np.array([r[k] for r in half], dtype=float)
        if len(xs) < 3 or np.ptp(xs) == 0:
            out[k] = None
            continue
        slope = float(np.polyfit(xs, ys, 1)[0])
        mean = float(np.mean(ys))
        change = slope * float(np.ptp(xs))
        out[k] = {"change_pct": 100 * change / mean if mean else 0.0,
                  "first": float(ys[0]), "last": float(ys[-1]), "mean": mean}  # fmt: skip
    return out


def soak_replay(policy: Policy, n_samples: int, seconds: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="soak-replay-"))
    sim_t = [0.0]
    rt = Runtime(policy, root / "state", clock=lambda: sim_t[0], inline_jobs=True)
    source = make_source("simulated", family="nanosensor", seed=0, rate_hz=None,
                         schedule={"kind": "recurring", "period": SHIFT_EVERY})  # fmt: skip
    fb = FeedbackChannel(10, 0.3, seed=0)
    rows: list[dict[str, float]] = []
    batch: list[tuple[str, np.ndarray]] = []
    t0 = time.monotonic()
    i = 0
    for s in fb.wrap(source):
        batch.append((s.sample_id, s.x))
        i += 1
        if len(batch) == 64:
            sim_t[0] = i / RATE_HZ
            rt.process_batch(batch)
            batch = []
            ready = fb.pop_ready()
            if ready:
                rt.add_labels([(sid, y, None) for sid, y in ready])
            rt.tick()
        if i % 5_120 == 0:
            rows.append({"samples": i, "wall_s": time.monotonic() - t0, **_proc(),
                         "state_mb": tree_bytes(root / "state") / 1e6,
                         "recalibrations": len(rt.results),
                         "versions": len(rt.registry.versions())})  # fmt: skip
            print(f"replay {rows[-1]}", flush=True)
        if i >= n_samples or time.monotonic() - t0 > seconds:
            break
    outcomes: dict[str, int] = {}
    for r in rt.results:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    # the most recalibrations that did work (not skipped) in any simulated hour
    worked = sorted(r.t_s for r in rt.results if r.outcome != "skipped")
    busiest = max((sum(1 for u in worked if t <= u < t + 3600) for t in worked), default=0)
    sim_hours = i / RATE_HZ / 3600
    rt.close()
    return {
        "samples": i,
        "wall_s": time.monotonic() - t0,
        "simulated_hours": sim_hours,
        "recalibrations": outcomes,
        "recalibrations_per_simulated_hour": sum(outcomes.values()) / sim_hours,
        "most_in_any_simulated_hour": busiest,
        "max_per_hour": policy.recalibration.max_per_hour,
        "rows": rows,
        "slopes": slopes(rows, "samples", ["rss_mb", "open_files", "threads", "state_mb"]),
        "peak_rss_mb_of_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def soak_daemon(prior: Path, seconds: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="soak-daemon-"))
    data = Policy().model_dump(mode="json")
    data["model"]["prior"] = str(prior)
    data["source"].update({"rate_hz": 2000, "schedule": {"kind": "recurring", "period_s": 2.5}})
    cfg = write_policy(root / "policy.yaml", data)
    d = DaemonProcess(cfg, root / "state", root / "daemon.log").start()
    rows: list[dict[str, float]] = []
    try:
        d.wait_ready(180)
        assert d.proc is not None
        t0 = time.monotonic()
        stop = threading.Event()
        while time.monotonic() - t0 < seconds and not stop.is_set():
            time.sleep(10)
            rows.append({"wall_s": time.monotonic() - t0, **_proc(d.proc.pid),
                         "samples": d.metric("regulator_samples_total"),
                         "state_mb": tree_bytes(root / "state") / 1e6,
                         "recalibrations": d.metric("regulator_recalibrations_total")})  # fmt: skip
            print(f"daemon {rows[-1]}", flush=True)
        outcomes = {o: d.metric("regulator_recalibrations_total", outcome=o)
                    for o in ("accepted", "rejected", "failed", "skipped")}  # fmt: skip
    finally:
        d.close()
    return {
        "seconds": rows[-1]["wall_s"] if rows else 0,
        "samples": rows[-1]["samples"] if rows else 0,
        "recalibrations": outcomes,
        "rows": rows,
        "slopes": slopes(rows, "wall_s", ["rss_mb", "open_files", "threads", "state_mb"]),
    }


def _table(name: str, res: dict[str, Any]) -> list[str]:
    lines = [
        f"| {name} | quantity | first | last | change over the 2nd half |",
        "|---|---|---|---|---|",
    ]
    for k, v in res["slopes"].items():
        if v is not None:
            lines.append(
                f"| | {k} | {v['first']:.2f} | {v['last']:.2f} | {v['change_pct']:+.1f} % |"
            )
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=900)
    ap.add_argument("--daemon-seconds", type=float, default=300)
    ap.add_argument("--prior", type=Path, default=REPO / "models" / "nanosensor")
    a = ap.parse_args()
    data = Policy().model_dump(mode="json")
    data["model"]["prior"] = str(a.prior)
    policy = Policy.model_validate(data)
    replay = soak_replay(policy, a.samples, a.seconds)
    daemon = soak_daemon(a.prior, a.daemon_seconds) if a.daemon_seconds > 0 else None
    result = {
        "command": f"python bench/soak.py --samples {a.samples} --seconds {a.seconds:g} "
        f"--daemon-seconds {a.daemon_seconds:g}",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, shared with other work",
        "replay": replay,
        "daemon": daemon,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# Soak",
        "",
        f"Command: `{result['command']}`; {result['machine']}.",
        "",
        f"Replay: {replay['samples']:,} samples ({replay['simulated_hours']:.1f} simulated "
        f"hours) in {replay['wall_s']:.0f} s; recalibrations {replay['recalibrations']} = "
        f"{replay['recalibrations_per_simulated_hour']:.2f} per simulated hour; at most "
        f"{replay['most_in_any_simulated_hour']} that did work in any simulated hour "
        f"(max_per_hour {replay['max_per_hour']}).",
        "",
        *_table("replay", replay),
        "",
    ]
    if daemon:
        lines += [
            f"Daemon: {daemon['samples']:,.0f} samples in {daemon['seconds']:.0f} s; "
            f"recalibrations {daemon['recalibrations']}.",
            "",
            *_table("daemon", daemon),
            "",
        ]
    (OUT / "soak.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
