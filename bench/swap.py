"""What a swap costs the serving thread.

Run: ``python bench/swap.py [--swaps 200] [--runs 3]`` (writes bench/results/swap.json
and swap.md). In one process, with the shipped nanosensor prior: a model version is
loaded off the measured path (``ServingSlot.load``: files read, OOD monitor built, as a
recalibration job does before it hands over), then the serving thread's part is timed,
``Runtime.swap_in`` (the reference assignment and the monitors' reset), and the first
sample served after it against the samples between swaps (the peer: ``Runtime.process``
of the same samples with no swap before them). Reported per run: median and p99 of the
swap itself, and the extra latency of the first sample after a swap over the median
sample; then the median and range of those over runs. Goal (issue 11): a swap adds
under 2 ms to the serving thread.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from regulator.policy.model import parse_policy  # noqa: E402
from regulator.service.daemon import SWITCH_INTERVAL_S  # noqa: E402
from regulator.service.runtime import Runtime  # noqa: E402
from regulator.tasks.base import make_family  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results"
BETWEEN = 5
"""Samples served between two swaps (the first after a swap is the one measured)."""


def measure(swaps: int, state: Path) -> dict[str, Any]:
    policy = parse_policy(
        {
            "device": {"id": "bench-swap"},
            "model": {"prior": str(REPO / "models" / "nanosensor")},
            "rules": [],
            "source": {"kind": "http"},
        }
    )
    rt = Runtime(policy, state)
    fam = make_family(str(rt.serving.bundle.task.get("family", "nanosensor")))
    x, _ = fam.sample(fam.nominal_environment(), swaps * BETWEEN + 50, np.random.default_rng(0))
    rt.prime_detector_thresholds()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    for i in range(50):  # warm-up
        rt.process(f"w{i}", x[i])
    swap_s: list[float] = []
    first_s: list[float] = []
    other_s: list[float] = []
    k = 50
    version = rt.serving.version
    for n in range(swaps):
        new = rt.slot.load(version, rt.clock())  # off the measured path
        t0 = time.perf_counter()
        rt.swap_in(new)
        swap_s.append(time.perf_counter() - t0)
        for j in range(BETWEEN):
            t0 = time.perf_counter()
            rt.process(f"s{n}-{j}", x[k])
            (first_s if j == 0 else other_s).append(time.perf_counter() - t0)
            k += 1
    rt.close()
    med_other = float(np.median(other_s))
    return {
        "swaps": swaps,
        "swap_p50_ms": 1e3 * float(np.median(swap_s)),
        "swap_p99_ms": 1e3 * float(np.percentile(swap_s, 99)),
        "swap_max_ms": 1e3 * float(np.max(swap_s)),
        "sample_p50_ms": 1e3 * med_other,
        "first_after_swap_p50_ms": 1e3 * float(np.median(first_s)),
        "first_after_swap_p99_ms": 1e3 * float(np.percentile(first_s, 99)),
        "extra_first_sample_p50_ms": 1e3 * (float(np.median(first_s)) - med_other),
        "swap_plus_extra_p99_ms": 1e3
        * float(np.percentile(np.asarray(swap_s) + np.asarray(first_s) - med_other, 99)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--swaps", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    runs = [measure(a.swaps, tmp / f"run{i}") for i in range(a.runs)]
    keys = [k for k in runs[0] if k != "swaps"]
    agg = {
        k: {
            "median": statistics.median(r[k] for r in runs),
            "min": min(r[k] for r in runs),
            "max": max(r[k] for r in runs),
        }
        for k in keys
    }
    res = {
        "command": f"python bench/swap.py --swaps {a.swaps} --runs {a.runs}",
        "machine": f"{platform.platform()}, {platform.machine()}, torch {torch.__version__}",
        "runs": runs,
        "summary": agg,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "swap.json").write_text(json.dumps(res, indent=1) + "\n")
    labels = {
        "swap_p50_ms": "the swap itself (`Runtime.swap_in`), p50",
        "swap_p99_ms": "the swap itself, p99",
        "swap_max_ms": "the swap itself, max",
        "sample_p50_ms": "a sample between swaps (`Runtime.process`), p50",
        "first_after_swap_p50_ms": "the first sample after a swap, p50",
        "first_after_swap_p99_ms": "the first sample after a swap, p99",
        "extra_first_sample_p50_ms": (
            "extra latency of that first sample over a sample between swaps, p50"
        ),
        "swap_plus_extra_p99_ms": (
            "swap + that extra latency, p99 (what a swap adds to the serving thread)"
        ),
    }
    md = [
        "# What a swap costs the serving thread",
        "",
        f"Command: `{res['command']}` · {res['machine']} · 2 CPUs · prior models/nanosensor, "
        f"1 torch thread; {a.swaps} swaps per run, {BETWEEN} samples served between swaps. "
        "Median [min, max] over runs; goal (issue 11): under 2 ms.",
        "",
        "| quantity | ms |",
        "|---|---:|",
    ]
    for k in keys:
        v = agg[k]
        md.append(f"| {labels[k]} | {v['median']:.3f} [{v['min']:.3f}, {v['max']:.3f}] |")
    worst = agg["swap_plus_extra_p99_ms"]["max"]
    md += [
        "",
        f"Goal (a swap adds under 2 ms): **{'met' if worst < 2.0 else 'not met'}** "
        f"(worst run's p99 {worst:.3f} ms).",
    ]
    (OUT / "swap.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
