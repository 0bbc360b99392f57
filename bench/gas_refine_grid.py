"""Leave-one-batch-out choice of the gas-drift prior's readout refinement.

    python bench/gas_refine_grid.py [MODEL] [--draws 5]

For every grid point (refinement steps, rate) the prior is adapted on 5 shots per gas
of each batch 2-5 and scored on the rest of that batch. For each batch b the setting
reported is the one with the best mean accuracy on the *other* batches, so no batch's
score chose its own setting. Writes ``bench/results/gas_refine_grid.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from gas_lobo import score_refinement  # noqa: E402

from regulator.meta.model import ModelBundle  # noqa: E402
from regulator.tasks.formats import load_gas_drift  # noqa: E402

GRID = ((0, 0.1), (10, 0.3), (30, 0.3), (100, 1.0), (300, 1.0))
BATCHES = (2, 3, 4, 5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=str(REPO / "models" / "gas-drift"))
    ap.add_argument("--draws", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    prior = ModelBundle.load(a.model)
    data = {b: load_gas_drift(REPO / "data" / "gas-drift" / f"batch{b}.dat")[:2] for b in BATCHES}
    acc: dict[tuple[int, float], dict[int, float]] = {}
    for steps, lr in GRID:
        acc[(steps, lr)] = score_refinement(prior, steps, lr, data, a.draws)
        print(steps, lr, acc[(steps, lr)], flush=True)
    lines = [
        "# Gas drift: readout refinement chosen leave-one-batch-out",
        "",
        f"Command: `python bench/gas_refine_grid.py --draws {a.draws}`; model `{a.model}`.",
        "",
        "| steps | rate | " + " | ".join(f"batch {b}" for b in BATCHES) + " | mean |",
        "|---|---|" + "---|" * (len(BATCHES) + 1),
    ]
    for (steps, lr), row in acc.items():
        cells = " | ".join(f"{100 * row[b]:.1f}" for b in BATCHES)
        lines.append(f"| {steps} | {lr} | {cells} | {100 * np.mean(list(row.values())):.1f} |")
    lines += ["", "| batch | setting chosen on the other batches | its accuracy |", "|---|---|---|"]
    for b in BATCHES:
        best = max(acc, key=lambda s: np.mean([acc[s][o] for o in BATCHES if o != b]))
        lines.append(f"| {b} | {best[0]} steps, rate {best[1]} | {100 * acc[best][b]:.1f} |")
    out = REPO / "bench" / "results" / "gas_refine_grid.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
