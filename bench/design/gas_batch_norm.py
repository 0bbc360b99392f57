"""Shipped gas prior: the support set's normaliser (30 shots) against one fitted on the
whole unlabelled batch, on the draws of ``bench/gas_lobo.py``.

    python bench/design/gas_batch_norm.py SEED DRAWS
"""

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])]
import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
from gas_lobo import BATCHES, REPO  # noqa: E402

from regulator.chip.network import ChipInstance  # noqa: E402
from regulator.meta.adapt import adapt  # noqa: E402
from regulator.meta.evaluate import query_metric  # noqa: E402
from regulator.meta.gas_protocol import draw_shots  # noqa: E402
from regulator.meta.model import ModelBundle  # noqa: E402
from regulator.tasks.formats import load_gas_drift  # noqa: E402

b = ModelBundle.load(REPO / "models" / "gas-drift")
data = {k: load_gas_drift(REPO / "data" / "gas-drift" / f"batch{k}.dat")[:2] for k in BATCHES}
seed = int(sys.argv[1])
draws = int(sys.argv[2])
for mode in ("support", "batch"):
    res = {}
    for bt, (x, y) in data.items():
        rng = np.random.default_rng([seed, bt, 0x6A5])
        sc = []
        for _ in range(draws):
            sup, rest = draw_shots(y, 5, rng)
            cand = b.clone()
            if mode == "batch":
                cand.meta["episode_normalisation"] = False
                cand.normaliser = cand.support_normaliser(x)  # unlabelled batch statistics
            chip = ChipInstance.create(b.profile, b.cfg, int(rng.integers(0, 2**31 - 1)))
            new, _ = adapt(cand, x[sup], y[sup], chip)
            sc.append(query_metric(new, chip, x[rest], y[rest]))
        res[bt] = round(100 * float(np.mean(sc)), 1)
    print(seed, mode, res, round(np.mean(list(res.values())), 1), flush=True)
