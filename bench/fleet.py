"""Meta-training iterations per second and fleet samples per second against the number
of Ray workers.

Meta-training: a small configuration inline (one process) and on a local Ray instance
with 1 and 2 CPUs (``--workers`` for a bigger host), each ``--repeats`` times after one
warm-up iteration (workers build their copy of the run).

Fleet: ``--devices`` steady simulated chips (the embedded default's policy, seeds 1..N)
as ``regulator fleet`` runs them, on a local Ray instance confined to N cores (the
process's CPU affinity, which Ray's processes inherit, so N workers really are N
cores), ``--rounds`` timed rounds of 100 samples per device after one warm-up round;
the peer is the same devices stepped one after another in this process on one core.

Writes ``bench/results/fleet.json`` and ``fleet.md``: median [range] of the rates, the
speed-up of N workers over 1, and Ray's overhead over inline at 1 worker.

    OMP_NUM_THREADS=1 nice python bench/fleet.py [--workers 1 2] [--repeats 3]
        [--iterations 5] [--devices 4] [--rounds 5]

On a bigger host, e.g. ``--workers 1 4 16 --devices 32``: keep ``--devices`` a multiple
of the largest worker count, so every core has devices to serve.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message=".*torch.jit.script.*")
warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")

import torch  # noqa: E402

from regulator.fleet.config import Fleet, load_fleet  # noqa: E402
from regulator.fleet.device import DeviceRunner  # noqa: E402
from regulator.fleet.supervisor import FleetSupervisor  # noqa: E402
from regulator.meta.train import TrainConfig, build_trainer, train_steps  # noqa: E402
from regulator.service.executor import Executor, InlineExecutor, create_executor  # noqa: E402

CFG = TrainConfig(meta_batch=8, hidden=(32,), n_steps=16, n_query=20, seed=0)


def _rate(executor: Executor, iterations: int) -> float:
    tr = build_trainer(CFG)
    train_steps(tr, 1, progress=False, executor=executor)  # warm-up
    t0 = time.perf_counter()
    train_steps(tr, iterations, progress=False, executor=executor)
    return iterations / (time.perf_counter() - t0)


FLEET_ROUND = 100  # samples per device per round


def _fleet(tmp: Path, devices: int) -> Fleet:
    """``devices`` steady chips on the embedded default's policy (seeds 1..N)."""
    path = tmp / "fleet.yaml"
    path.write_text(
        json.dumps(
            {
                "state_root": str(tmp / "state"),
                "targets_file": str(tmp / "targets.json"),
                "samples_per_round": FLEET_ROUND,
                "devices": [{"id": f"chip{i}", "seed": i} for i in range(1, devices + 1)],
            }
        )
    )
    return load_fleet(path)


def _fleet_inline(devices: int, rounds: int) -> float:
    """Samples per second of the devices stepped in turn in this process, on one core."""
    with tempfile.TemporaryDirectory() as tmp:
        fleet = _fleet(Path(tmp), devices)
        runners = [
            DeviceRunner(p, fleet.state_root / d, metrics_host=None)
            for d, p in fleet.policies.items()
        ]
        for r in runners:
            r.step(FLEET_ROUND)  # warm-up
        t0 = time.perf_counter()
        for _ in range(rounds):
            for r in runners:
                r.step(FLEET_ROUND)
        rate = devices * rounds * FLEET_ROUND / (time.perf_counter() - t0)
        for r in runners:
            r.close()
    return rate


def _fleet_ray(devices: int, rounds: int, workers: int) -> float:
    """Samples per second of the fleet's actors on a Ray instance of ``workers`` cores."""
    with tempfile.TemporaryDirectory() as tmp:
        fleet = _fleet(Path(tmp), devices)
        cfg = fleet.config.model_copy(update={"actor_cpus": workers / devices})
        fleet = dataclasses.replace(fleet, config=cfg)
        sup = FleetSupervisor(fleet, num_cpus=workers)
        sup.start()
        try:
            sup.round()  # warm-up
            t0 = time.perf_counter()
            for _ in range(rounds):
                sup.round()
            return devices * rounds * FLEET_ROUND / (time.perf_counter() - t0)
        finally:
            sup.shutdown()


def _on_cores(n: int, fn: Any, *args: Any) -> float:
    """``fn(*args)`` with this process (and what it starts) confined to ``n`` cores."""
    every = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(every)[:n])
    try:
        return float(fn(*args))
    finally:
        os.sched_setaffinity(0, every)


def _summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--devices", type=int, default=4, help="fleet size (0 rounds: no fleet)")
    p.add_argument("--rounds", type=int, default=5, help="timed fleet rounds per run")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = p.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    meta: dict[str, list[float]] = {"inline": [], **{f"ray-{w}": [] for w in a.workers}}
    fleet: dict[str, list[float]] = {"inline": [], **{f"ray-{w}": [] for w in a.workers}}
    for _ in range(a.repeats):  # interleaved, so drifting load hits every variant alike
        if a.iterations:
            meta["inline"].append(_rate(InlineExecutor(), a.iterations))
            for w in a.workers:
                ex = create_executor("ray", num_cpus=w)
                try:
                    meta[f"ray-{w}"].append(_rate(ex, a.iterations))
                finally:
                    ex.shutdown()
        if a.rounds:
            fleet["inline"].append(_on_cores(1, _fleet_inline, a.devices, a.rounds))
            for w in a.workers:
                fleet[f"ray-{w}"].append(_on_cores(w, _fleet_ray, a.devices, a.rounds, w))
    cmd = "OMP_NUM_THREADS=1 nice python bench/fleet.py " + " ".join(sys.argv[1:])
    out = {"config": CFG.model_dump(mode="json"), "iterations": a.iterations,
           "repeats": a.repeats, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
           "command": cmd, "fleet_devices": a.devices, "fleet_rounds": a.rounds,
           "fleet_samples_per_round": FLEET_ROUND}  # fmt: skip
    meta_t = _table(meta, a.workers) if a.iterations else None
    fleet_t = _table(fleet, a.workers) if a.rounds else None
    if meta_t:
        out.update({"iterations_per_s": meta_t[0], "speedup_over_1_worker": meta_t[1],
                    "inline_over_ray1": meta_t[2]})  # fmt: skip
    if fleet_t:
        out.update({"fleet_samples_per_s": fleet_t[0], "fleet_speedup_over_1_worker": fleet_t[1],
                    "fleet_inline_over_ray1": fleet_t[2]})  # fmt: skip
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "fleet.json").write_text(json.dumps(out, indent=1))
    lines = [
        "# Ray: meta-training iterations and fleet samples per second against workers",
        "",
        f"`{cmd}` on {out['machine']} (shared with other work), {a.repeats} interleaved "
        "runs, median [range].",
    ]
    if meta_t:
        lines += [
            "",
            "## Meta-training",
            "",
            f"Meta-batch {CFG.meta_batch}, hidden 32, 16 steps; {a.iterations} timed "
            "iterations after one warm-up.",
            "",
            *_rows(meta_t, "iterations/s"),
        ]
    if fleet_t:
        lines += [
            "",
            "## Fleet (`regulator fleet`)",
            "",
            f"{a.devices} steady simulated chips (embedded default policy, seeds 1..{a.devices}), "
            f"{a.rounds} timed rounds of {FLEET_ROUND} samples per device after one warm-up "
            "round. `ray-N`: one actor per device on a local Ray confined to N cores (CPU "
            "affinity); `inline`: the same devices stepped in turn in one process on one core.",
            "",
            *_rows(fleet_t, "samples/s (whole fleet)"),
        ]
    (a.out / "fleet.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


Table = tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]


def _table(runs: dict[str, list[float]], workers: list[int]) -> Table:
    """Summaries, speed-ups over the first worker count, inline over ray-1."""
    res = {k: _summary(v) for k, v in runs.items()}
    base = statistics.median(runs[f"ray-{workers[0]}"])
    speedup = {k: _summary([r / base for r in v]) for k, v in runs.items() if k.startswith("ray")}
    overhead = _summary([i / r for i, r in zip(runs["inline"], runs["ray-1"], strict=True)]) \
        if "ray-1" in runs else None  # fmt: skip
    return res, speedup, overhead


def _fmt(s: dict[str, Any]) -> str:
    return f"{s['median']:.2f} [{s['min']:.2f}, {s['max']:.2f}]"


def _rows(table: Table, unit: str) -> list[str]:
    res, speedup, overhead = table
    lines = [f"| executor | {unit} | speed-up over 1 Ray worker |", "|---|---|---|"]
    for k, s in res.items():
        lines.append(f"| {k} | {_fmt(s)} | {_fmt(speedup[k]) if k in speedup else '-'} |")
    if overhead is not None:
        lines += ["", f"Ray's overhead at 1 worker (inline rate / Ray rate): {_fmt(overhead)}x."]
    return lines


if __name__ == "__main__":
    sys.exit(main())
