"""Leave-one-batch-out between whole priors (e.g. widths), each adapting as it ships.

For each of batches 2-5 the prior with the best mean over the *other three* batches is
the one leave-one-batch-out would ship for it; its score on the held-out batch is the
honest figure. Same seeded draws as every design round (``seeded_draws``). Run from the
repository root:
``.venv/bin/python bench/design/gas_priors_lobo.py DRAWS FOLDER [FOLDER ...]``.
"""

from __future__ import annotations

import sys

import numpy as np
from gas_features import seeded_draws  # type: ignore[import-not-found]

from regulator.chip.network import ChipInstance
from regulator.meta.adapt import adapt
from regulator.meta.evaluate import query_metric
from regulator.meta.model import ModelBundle
from regulator.meta.recipes import GAS_DIR
from regulator.tasks.formats import load_gas_drift

BATCHES = (2, 3, 4, 5)


def batch_score(bundle: ModelBundle, x: np.ndarray, y: np.ndarray, b: int, draws: int) -> float:
    """Mean accuracy % of ``bundle`` adapted on the seeded draws of batch ``b``."""
    accs = []
    for sup, rest, seed, _ in seeded_draws(y, b, draws):
        chip = ChipInstance.create(bundle.profile, bundle.cfg, seed)
        new, _ = adapt(bundle, x[sup], y[sup], chip)
        accs.append(query_metric(new, chip, x[rest], y[rest]))
    return 100 * float(np.mean(accs))


def report(scores: dict[str, dict[int, float]], batches: tuple[int, ...] = BATCHES) -> None:
    """Each candidate's per-batch scores, then what leave-one-batch-out would pick."""
    for name, per in scores.items():
        line = " / ".join(f"{per[b]:.1f}" for b in batches)
        print(f"{name}: {line}  mean {np.mean(list(per.values())):.2f}")
    lobo = []
    for b in batches:
        others = [o for o in batches if o != b]
        pick = max(scores, key=lambda n: np.mean([scores[n][o] for o in others]))
        lobo.append(scores[pick][b])
        print(f"batch {b} held out -> {pick} ({scores[pick][b]:.1f})")
    held_out = " / ".join(f"{a:.1f}" for a in lobo)
    print(f"leave-one-batch-out {held_out}  mean {np.mean(lobo):.2f}")


def main() -> None:
    draws, folders = int(sys.argv[1]), sys.argv[2:]
    scores: dict[str, dict[int, float]] = {f: {} for f in folders}
    for b in BATCHES:
        x, y = load_gas_drift(GAS_DIR / f"batch{b}.dat")[:2]
        for folder in folders:
            scores[folder][b] = batch_score(ModelBundle.load(folder), x, y, b, draws)
    report(scores)


if __name__ == "__main__":
    main()
