"""Gas-drift prior variants (width, time steps, simulated drift), trained on batch 1 only.

    .venv/bin/python bench/design/gas_variants.py NAME [key=value ...]

Trains the ``gas-drift`` recipe with the given TrainConfig overrides (JSON values;
``family.X=...`` overrides the family's simulated drift) into ``/tmp/gas-variants/NAME``
and prints the energy per inference. Scoring: ``bench/design/gas_features.py FOLDER``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import torch

from regulator.meta.recipes import RECIPES, REPO
from regulator.meta.train import build_trainer, finalise, train_steps


def main() -> None:
    name, overrides = sys.argv[1], sys.argv[2:]
    torch.set_num_threads(1)
    cfg = RECIPES["gas-drift"]
    upd: dict = {}
    fam = dict(cfg.family_config)
    for kv in overrides:
        k, v = kv.split("=", 1)
        if k.startswith("family."):
            fam[k[7:]] = json.loads(v)
        elif k.startswith("encoder."):
            enc = dict(upd.get("encoder_config", cfg.encoder_config))
            enc[k[8:]] = json.loads(v)
            upd["encoder_config"] = enc
        else:
            upd[k] = json.loads(v)
    upd["family_config"] = fam
    cfg = cfg.model_copy(update=upd)
    t0 = time.perf_counter()
    with contextlib.chdir(REPO):
        tr = build_trainer(cfg)
        train_steps(tr, cfg.pretrain_steps + cfg.iterations, progress=False)
        bundle = finalise(tr)
    out = Path("/tmp/gas-variants") / name
    bundle.save(out)
    e = bundle.calibration.get("energy_per_inference_j", 0.0)
    print(f"{name}: trained in {time.perf_counter() - t0:.0f} s, {1e9 * e:.1f} nJ/inference")


if __name__ == "__main__":
    main()
