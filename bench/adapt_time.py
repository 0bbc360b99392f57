"""Deployment adaptation time and learning energy of both shipped priors (issue 10 goal:
under 1 s on 2 cores, learning energy under 100 inferences' worth).

    python bench/adapt_time.py [--runs 3] [--adaptations 10]

Each run adapts each prior ``--adaptations`` times on fresh 5-shot support sets (gas:
batch 4, 5 per gas; nanosensor: a held-out environment, 5 per class) on fresh chip
instances, after one warm-up adaptation that is not timed. Reports the median of each
run's median seconds with the range over runs, and learning energy in inferences.
Writes ``bench/results/adapt_time.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from regulator.chip.network import ChipInstance  # noqa: E402
from regulator.meta.adapt import adapt  # noqa: E402
from regulator.meta.evaluate import HELDOUT_SEED_BASE, family_for  # noqa: E402
from regulator.meta.gas_protocol import draw_shots  # noqa: E402
from regulator.meta.model import ModelBundle  # noqa: E402
from regulator.tasks.formats import load_gas_drift  # noqa: E402


def support_pool(name: str, bundle: ModelBundle) -> tuple[np.ndarray, np.ndarray]:
    if name == "gas-drift":
        return load_gas_drift(REPO / "data" / "gas-drift" / "batch4.dat")[:2]
    fam = family_for(bundle)
    env = fam.environment_from_seed(HELDOUT_SEED_BASE + 7)
    return fam.sample(env, 400, np.random.default_rng(7))


def run_once(name: str, n: int, seed: int) -> tuple[float, float]:
    bundle = ModelBundle.load(REPO / "models" / name)
    x, y = support_pool(name, bundle)
    e_inf = float(bundle.calibration["energy_per_inference_j"])
    rng = np.random.default_rng(seed)
    secs, ratio = [], []
    for i in range(n + 1):
        sup, _ = draw_shots(y, 5, rng)
        chip = ChipInstance.create(bundle.profile, bundle.cfg, seed * 1000 + i)
        t0 = time.perf_counter()
        _, rep = adapt(bundle, x[sup], y[sup], chip)
        if i:  # the first adaptation warms torch up
            secs.append(time.perf_counter() - t0)
            ratio.append(rep.learning_energy_j / e_inf)
    return float(np.median(secs)), float(np.median(ratio))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--adaptations", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(2)
    lines = [
        "# Adaptation time and learning energy of the shipped priors",
        "",
        f"Command: `python bench/adapt_time.py --runs {a.runs} --adaptations {a.adaptations}`"
        f" (torch threads 2). Median of each run's median over {a.adaptations} adaptations"
        " (5 shots per class, fresh chip each), [range over runs].",
        "",
        "| prior | seconds per adaptation | learning energy, inferences' worth |",
        "|---|---|---|",
    ]
    for name in ("nanosensor", "gas-drift"):
        res = [run_once(name, a.adaptations, r) for r in range(a.runs)]
        s_, e_ = [r[0] for r in res], [r[1] for r in res]
        lines.append(
            f"| {name} | {np.median(s_):.3f} [{min(s_):.3f}, {max(s_):.3f}] "
            f"| {np.median(e_):.1f} [{min(e_):.1f}, {max(e_):.1f}] |"
        )
        print(lines[-1], flush=True)
    out = REPO / "bench" / "results" / "adapt_time.md"
    out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
