"""Logistic regression on the hidden features of one gas body, another, or both side by
side (issue 10, round 4): can a readout that weighs the features pick, per task, what each
body holds? The same seed-0 draws as ``bench/gas_lobo.py``.

    .venv/bin/python bench/design/gas_concat.py DRAWS FOLDER_A FOLDER_B
"""

import sys
import warnings

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, "bench/design")
from gas_features import feats

from regulator.chip.network import ChipInstance
from regulator.meta.gas_protocol import draw_shots
from regulator.meta.model import ModelBundle
from regulator.meta.recipes import GAS_DIR
from regulator.tasks.formats import load_gas_drift

torch.set_num_threads(1)
bodies = [ModelBundle.load(f) for f in sys.argv[2:]]
draws = int(sys.argv[1])
tab = {}
for b in (2, 3, 4, 5):
    x, y = load_gas_drift(GAS_DIR / f"batch{b}.dat")[:2]
    rng = np.random.default_rng([0, b, 0x6A5])
    res = {}
    for _ in range(draws):
        sup, rest = draw_shots(y, 5, rng)
        sx, sy, qx, qy = x[sup], y[sup], x[rest], y[rest]
        seed = int(rng.integers(0, 2**31 - 1))
        F = []
        for bd in bodies:
            norm = bd.support_normaliser(sx.astype(np.float32))
            chip = ChipInstance.create(bd.profile, bd.cfg, seed)
            F.append((feats(bd, norm, sx, chip), feats(bd, norm, qx, chip)))
        for name, idx in (("A", [0]), ("B", [1]), ("A+B", [0, 1])):
            fs = np.concatenate([F[i][0] for i in idx], 1)
            fq = np.concatenate([F[i][1] for i in idx], 1)
            mu, sd = fs.mean(0), fs.std(0) + 1e-6
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for c in (1.0, 10.0):
                    lr = LogisticRegression(C=c, max_iter=3000).fit((fs - mu) / sd, sy)
                    res.setdefault(f"{name} C={c}", []).append(
                        float((lr.predict((fq - mu) / sd) == qy).mean())
                    )
    for k, v in res.items():
        tab.setdefault(k, {})[b] = np.mean(v)
    print(b, {k: round(100 * np.mean(v), 1) for k, v in res.items()}, flush=True)
for k, r in tab.items():
    print(
        k,
        " ".join(f"{100 * r[b]:.1f}" for b in (2, 3, 4, 5)),
        f"mean {100 * np.mean(list(r.values())):.1f}",
    )
