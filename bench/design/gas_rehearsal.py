"""Does the chip's readout gain from rehearsing batch 1 beside the shots?

The strongest gas peer (logistic regression on batch 1 plus the shots, shots weighted
x20) gains about 3 points over the shots alone. The chip's readout sees only the shots.
This probe fits logistic regression on the chip's hidden features of the 30 shots plus
batch 1's hidden features (stored once, at training time; no inference at adaptation),
batch 1 normalised on episodes of its own (5 per gas, as the shots are), and scores on
the same seed-0 draws as every design round. Run from the repository root:
``.venv/bin/python bench/design/gas_rehearsal.py [model folder] [draws] [episodes]``.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression

from gas_features import feats, seeded_draws  # type: ignore[import-not-found]
from regulator.chip.network import ChipInstance
from regulator.meta.gas_protocol import draw_shots
from regulator.meta.model import ModelBundle
from regulator.meta.recipes import GAS_DIR
from regulator.tasks.formats import load_gas_drift


def source_features(bundle: ModelBundle, episodes: int, seed: int = 7):  # type: ignore[no-untyped-def]
    """Batch 1's hidden features, each row normalised on an episode's 5 shots per gas."""
    x, y = load_gas_drift(GAS_DIR / "batch1.dat")[:2]
    rng = np.random.default_rng(seed)
    fs, ys = [], []
    chip = ChipInstance.create(bundle.profile, bundle.cfg, seed)
    for _ in range(episodes):
        sup, _ = draw_shots(y, 5, rng)
        norm = bundle.support_normaliser(x[sup].astype(np.float32))
        fs.append(feats(bundle, norm, x, chip))
        ys.append(y)
    return np.concatenate(fs), np.concatenate(ys)


def main() -> None:
    folder = sys.argv[1] if len(sys.argv) > 1 else "models/gas-drift"
    draws = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    episodes = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    bundle = ModelBundle.load(folder)
    src_f, src_y = source_features(bundle, episodes)
    means: dict[str, list[float]] = {}
    for b in (2, 3, 4, 5):
        x, y = load_gas_drift(GAS_DIR / f"batch{b}.dat")[:2]
        res: dict[str, list[float]] = {}
        for sup, rest, seed, _ in seeded_draws(y, b, draws):
            sx, sy, qx, qy = x[sup], y[sup], x[rest], y[rest]
            norm = bundle.support_normaliser(sx.astype(np.float32))
            chip = ChipInstance.create(bundle.profile, bundle.cfg, seed)
            fs, fq = feats(bundle, norm, sx, chip), feats(bundle, norm, qx, chip)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mu, sd = fs.mean(0), fs.std(0) + 1e-6
                lr = LogisticRegression(C=10.0, max_iter=2000).fit((fs - mu) / sd, sy)
                res.setdefault("shots C=10", []).append(float((lr.predict((fq - mu) / sd) == qy).mean()))
                for w in (5.0, 20.0, 100.0):
                    f_all = np.concatenate([src_f, fs])
                    y_all = np.concatenate([src_y, sy])
                    w_all = np.concatenate([np.ones(len(src_f)) / episodes, np.full(len(fs), w)])
                    for std_on in ("pool", "shots"):
                        if std_on == "pool":
                            am, asd = f_all.mean(0), f_all.std(0) + 1e-6
                        else:
                            am, asd = mu, sd
                        for c in (1.0, 10.0):
                            lr = LogisticRegression(C=c, max_iter=2000).fit(
                                (f_all - am) / asd, y_all, sample_weight=w_all
                            )
                            acc = float((lr.predict((fq - am) / asd) == qy).mean())
                            res.setdefault(f"rehearse w={w:g} std={std_on} C={c:g}", []).append(acc)
        for k, v in res.items():
            means.setdefault(k, []).append(100 * float(np.mean(v)))
    for k, v in means.items():
        print(f"{k:40s} " + " / ".join(f"{a:.1f}" for a in v) + f"  mean {np.mean(v):.2f}")


if __name__ == "__main__":
    main()
