"""Meta-training iterations per second against the number of Ray workers.

Runs a small meta-training configuration inline (one process) and on a local Ray
instance with 1 and 2 CPUs (``--workers`` for a bigger host), each ``--repeats`` times
after one warm-up iteration (workers build their copy of the run), and writes
``bench/results/fleet.json`` and ``fleet.md``: median [range] of iterations per second,
the speed-up of N workers over 1, and Ray's overhead over inline at 1 worker.
Fleet samples per second (``regulator fleet``) are not measured: the fleet is not built.

    OMP_NUM_THREADS=1 python bench/fleet.py [--workers 1 2] [--repeats 3] [--iterations 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message=".*torch.jit.script.*")
warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")

import torch  # noqa: E402

from regulator.meta.train import TrainConfig, build_trainer, train_steps  # noqa: E402
from regulator.service.executor import Executor, InlineExecutor, create_executor  # noqa: E402

CFG = TrainConfig(meta_batch=8, hidden=(32,), n_steps=16, n_query=20, seed=0)


def _rate(executor: Executor, iterations: int) -> float:
    tr = build_trainer(CFG)
    train_steps(tr, 1, progress=False, executor=executor)  # warm-up
    t0 = time.perf_counter()
    train_steps(tr, iterations, progress=False, executor=executor)
    return iterations / (time.perf_counter() - t0)


def _summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = p.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    runs: dict[str, list[float]] = {"inline": []}
    runs.update({f"ray-{w}": [] for w in a.workers})
    for _ in range(a.repeats):  # interleaved, so drifting load hits every variant alike
        runs["inline"].append(_rate(InlineExecutor(), a.iterations))
        for w in a.workers:
            ex = create_executor("ray", num_cpus=w)
            try:
                runs[f"ray-{w}"].append(_rate(ex, a.iterations))
            finally:
                ex.shutdown()
    res = {k: _summary(v) for k, v in runs.items()}
    base = statistics.median(runs[f"ray-{a.workers[0]}"])
    speedup = {k: _summary([r / base for r in v]) for k, v in runs.items() if k.startswith("ray")}
    overhead = _summary([i / r for i, r in zip(runs["inline"], runs["ray-1"], strict=True)]) \
        if "ray-1" in runs else None  # fmt: skip
    cmd = "OMP_NUM_THREADS=1 python bench/fleet.py " + " ".join(sys.argv[1:])
    out = {"config": CFG.model_dump(mode="json"), "iterations": a.iterations,
           "repeats": a.repeats, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
           "command": cmd, "iterations_per_s": res, "speedup_over_1_worker": speedup,
           "inline_over_ray1": overhead}  # fmt: skip
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "fleet.json").write_text(json.dumps(out, indent=1))

    def fmt(s: dict[str, Any]) -> str:
        return f"{s['median']:.2f} [{s['min']:.2f}, {s['max']:.2f}]"

    lines = [
        "# Meta-training on Ray: iterations per second against workers",
        "",
        f"`{cmd}` on {out['machine']} (shared); meta-batch {CFG.meta_batch}, hidden 32, "
        f"16 steps; {a.iterations} timed iterations after one warm-up, {a.repeats} runs, "
        "median [range].",
        "",
        "| executor | iterations/s | speed-up over 1 Ray worker |",
        "|---|---|---|",
    ]
    for k, s in res.items():
        lines.append(f"| {k} | {fmt(s)} | {fmt(speedup[k]) if k in speedup else '-'} |")
    if overhead is not None:
        lines += ["", f"Ray's overhead at 1 worker (inline rate / Ray rate): {fmt(overhead)}x."]
    lines += ["", "Fleet samples per second: not measured (`regulator fleet` is not built)."]
    (a.out / "fleet.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
