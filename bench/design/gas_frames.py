"""Sixth round: which frame the rehearsal readout fits batch 1's rows in, chosen
leave-one-batch-out.

Two frames for the source rows' input lines (``regulator.meta.rehearsal``):

- ``own`` (shipped): batch 1's rows normalised on batch 1's own statistics, standardised
  on the shots, as episodic training normalises each environment on its own;
- ``pooled``: batch 1's rows under the shots' normaliser (the drifted batch's frame),
  standardised on the pool of source rows and shots.

For each batch, the same seed-0 draws as every design round (``seeded_draws``); for each
held-out batch the frame with the better mean over the *other three* batches is the one
leave-one-batch-out would ship, and its score on the held-out batch is the honest figure.

``--simulated``: drift simulated from batch 1 alone, the criterion that never sees a
later batch. Batch 1 is split in two halves by gas (fixed seed): the prior rehearses
half A; half B is drifted and the shots and queries are drawn from it. Three drifts,
fixed before any was scored, two seeds each: a log-normal gain per feature (sd 0.5); sd
1.0 with 30 % per-sample multiplicative noise; sd 0.5 plus a gain per gas and feature
(sd 0.3), the analyte-specific drift that confuses gases. Both frames, no rehearsal
(prototype + delta rule) and the logistic-regression peer fitted on half A + the shots.

The body meta-trained on all of batch 1 has seen half B; for a prior that has not:
``gas_frames.py --write-half-a /tmp/half-a/batch1.dat``, then
``bench/design/gas_variants.py half-a 'family.path="/tmp/half-a/batch1.dat"'`` and score
``/tmp/gas-variants/half-a`` with ``--simulated``.

Run from the repository root:
``.venv/bin/python bench/design/gas_frames.py [model folder] [draws] [--simulated]``.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
from gas_features import seeded_draws  # type: ignore[import-not-found]
from gas_priors_lobo import batch_score, report  # type: ignore[import-not-found]

import regulator.meta.adapt as adapt_module
from regulator.chip.network import ChipInstance
from regulator.meta.adapt import adapt
from regulator.meta.evaluate import query_metric
from regulator.meta.model import ModelBundle
from regulator.meta.peers import Peers, SourceData
from regulator.meta.recipes import GAS_DIR
from regulator.meta.rehearsal import REHEARSAL_X, attach_source, rehearsal_readout
from regulator.tasks.formats import load_gas_drift

FRAMES = {
    "own": rehearsal_readout,
    "pooled": functools.partial(rehearsal_readout, source_frame="shots", standardise_on="pool"),
}


DRIFTS = {
    "gain 0.5": (0.5, 0.0, 0.0),
    "gain 1.0 + noise 0.3": (1.0, 0.3, 0.0),
    "gain 0.5 + per-gas 0.3": (0.5, 0.0, 0.3),
}
"""name: (sd of the log gain per feature, per-sample noise sd, sd of the log gain per
gas and feature)."""


def drifted(
    x: np.ndarray, y: np.ndarray, spec: tuple[float, float, float], seed: int
) -> np.ndarray:
    gain_sd, noise_sd, gas_sd = spec
    rng = np.random.default_rng([seed, 0xD21F7])
    log_gain = gain_sd * rng.standard_normal(x.shape[1:])[None]
    per_gas = gas_sd * rng.standard_normal((int(y.max()) + 1, *x.shape[1:]))
    noise = noise_sd * rng.standard_normal(x.shape)
    return (x * np.exp(log_gain + per_gas[y] + noise)).astype(np.float32)


def halves(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batch 1's rows split in two by gas (fixed seed): half A, half B."""
    rng = np.random.default_rng(0x5A17)
    half_a = np.concatenate(
        [rng.permutation(np.flatnonzero(y == c))[: (y == c).sum() // 2] for c in np.unique(y)]
    )
    return np.sort(half_a), np.setdiff1d(np.arange(len(y)), half_a)


def write_half_a(path: Path) -> None:
    """Half A's lines of ``batch1.dat``, to train a prior that never saw half B."""
    lines = (GAS_DIR / "batch1.dat").read_text().splitlines()
    y = load_gas_drift(GAS_DIR / "batch1.dat")[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines[i] + "\n" for i in halves(y)[0]))


def simulated(bundle: ModelBundle, draws: int) -> None:
    x, y = load_gas_drift(GAS_DIR / "batch1.dat")[:2]
    half_a, half_b = halves(y)
    with_a = bundle.clone()
    attach_source(with_a, x[half_a], y[half_a])
    without = bundle.clone()
    del without.meta_tensors[REHEARSAL_X]
    peers = Peers.fit(SourceData([(x[half_a], y[half_a])], int(y.max()) + 1, signed_log=True))
    rows: dict[str, list[float]] = {}
    for name, spec in DRIFTS.items():
        for seed in (0, 1):
            xb, yb = drifted(x[half_b], y[half_b], spec, seed), y[half_b]
            for sup, rest, chip_seed, _ in seeded_draws(yb, 100 + seed, draws):
                for method, cand, fit in (
                    ("own", with_a, FRAMES["own"]),
                    ("pooled", with_a, FRAMES["pooled"]),
                    ("no rehearsal", without, rehearsal_readout),
                ):
                    adapt_module.rehearsal_readout = fit  # type: ignore[assignment]
                    chip = ChipInstance.create(bundle.profile, bundle.cfg, chip_seed)
                    new, _ = adapt(cand, xb[sup], yb[sup], chip)
                    rows.setdefault(f"{name}|{method}", []).append(
                        query_metric(new, chip, xb[rest], yb[rest])
                    )
                peer = peers.score(xb[sup], yb[sup], xb[rest], yb[rest])["lr_source"]
                rows.setdefault(f"{name}|LR peer, half A + shots", []).append(peer)
    adapt_module.rehearsal_readout = rehearsal_readout  # type: ignore[assignment]
    methods = ("own", "pooled", "no rehearsal", "LR peer, half A + shots")
    print("| method | " + " | ".join(DRIFTS) + " | mean |")
    for m in methods:
        accs = [100 * float(np.mean(rows[f"{d}|{m}"])) for d in DRIFTS]
        print(f"| {m} | " + " | ".join(f"{a:.1f}" for a in accs) + f" | {np.mean(accs):.1f} |")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--write-half-a":
        write_half_a(Path(sys.argv[2]))
        return
    folder = sys.argv[1] if len(sys.argv) > 1 else "models/gas-drift"
    draws = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    bundle = ModelBundle.load(folder)
    if "--simulated" in sys.argv:
        simulated(bundle, draws)
        return
    batches = (2, 3, 4, 5)
    without = bundle.clone()
    del without.meta_tensors[REHEARSAL_X]
    candidates = {
        "own": (bundle, FRAMES["own"]),
        "pooled": (bundle, FRAMES["pooled"]),
        "none": (without, rehearsal_readout),
    }
    scores: dict[str, dict[int, float]] = {name: {} for name in candidates}
    for b in batches:
        x, y = load_gas_drift(GAS_DIR / f"batch{b}.dat")[:2]
        for name, (cand, fit) in candidates.items():
            adapt_module.rehearsal_readout = fit  # type: ignore[assignment]
            scores[name][b] = batch_score(cand, x, y, b, draws)
    adapt_module.rehearsal_readout = rehearsal_readout  # type: ignore[assignment]
    report(scores, batches)


if __name__ == "__main__":
    main()
