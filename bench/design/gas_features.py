"""Where the gas prior loses batch 4: the chip's hidden features against the raw ones.

For each batch, 5 draws of 5 shots per gas: the shipped prior's prototype readout, its
refined readout, logistic regression on the chip's readout features (fitted on the
shots), and logistic regression on the normalised raw features. Run from the repository
root: ``.venv/bin/python bench/design/gas_features.py [model folder]``.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from regulator.chip.network import ChipInstance
from regulator.meta.adapt import adapt
from regulator.meta.evaluate import query_metric
from regulator.meta.gas_protocol import draw_shots
from regulator.meta.model import ModelBundle
from regulator.meta.readout import li_kernel, readout_features
from regulator.meta.recipes import GAS_DIR
from regulator.tasks.formats import load_gas_drift


def feats(bundle: ModelBundle, norm, x: np.ndarray, chip: ChipInstance) -> np.ndarray:
    with torch.no_grad():
        inp = bundle.encode(x, chip.generator, normaliser=norm)
        out = bundle.network(inp, chip, input_is_spikes=bundle.encoder.spiking)
    k = li_kernel(bundle.cfg, out.last_spikes.shape[0])
    return readout_features(out.last_spikes, k).numpy()


def seeded_draws(y: np.ndarray, batch: int, draws: int, shots: int = 5):  # type: ignore[no-untyped-def]
    """The design rounds' draws of ``shots`` per gas for ``batch`` (the seeding of
    ``bench/gas_lobo.py``): per draw the support rows, the rest, a chip seed, and the
    generator (for whatever else a script draws, after these)."""
    rng = np.random.default_rng([0, batch, 0x6A5])
    for _ in range(draws):
        sup, rest = draw_shots(y, shots, rng)
        yield sup, rest, int(rng.integers(0, 2**31 - 1)), rng


def main() -> None:
    folder = sys.argv[1] if len(sys.argv) > 1 else "models/gas-drift"
    bundle = ModelBundle.load(folder)
    draws = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    norm_on = sys.argv[3] if len(sys.argv) > 3 else "shots"
    for b in (2, 3, 4, 5):
        x, y = load_gas_drift(GAS_DIR / f"batch{b}.dat")[:2]
        res: dict[str, list[float]] = {}
        for sup, rest, seed, _ in seeded_draws(y, b, draws):
            sx, sy, qx, qy = x[sup], y[sup], x[rest], y[rest]
            norm = bundle.support_normaliser((x if norm_on == "batch" else sx).astype(np.float32))
            for name, steps in (("proto", 0), ("proto+refine", None)):
                chip = ChipInstance.create(bundle.profile, bundle.cfg, seed)
                new, _ = adapt(bundle, sx, sy, chip, steps=steps)
                res.setdefault(name, []).append(query_metric(new, chip, qx, qy))
            chip = ChipInstance.create(bundle.profile, bundle.cfg, seed)
            fs, fq = feats(bundle, norm, sx, chip), feats(bundle, norm, qx, chip)
            mu, sd = fs.mean(0), fs.std(0) + 1e-6
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for c in (0.1, 1.0, 10.0):
                    lr = LogisticRegression(C=c, max_iter=2000).fit((fs - mu) / sd, sy)
                    res.setdefault(f"lr_hidden C={c}", []).append(
                        float((lr.predict((fq - mu) / sd) == qy).mean())
                    )
            act = (fs > 0).mean()
            res.setdefault("active fraction", []).append(float(act))
        print(f"batch {b}: " + ", ".join(f"{k} {100 * np.mean(v):.1f}" for k, v in res.items()))


if __name__ == "__main__":
    main()
