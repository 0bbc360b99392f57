"""Gas-drift prior variants (width, time steps, simulated drift), trained on batch 1 only.

    .venv/bin/python bench/design/gas_variants.py NAME [key=value ...]

Trains the ``gas-drift`` recipe with the given TrainConfig overrides (JSON values;
``family.X=...`` overrides the family's simulated drift) into ``/tmp/gas-variants/NAME``
and prints the energy per inference. Scoring: ``bench/design/gas_features.py FOLDER``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from gas_lobo import train, variant_config  # noqa: E402


def main() -> None:
    name, overrides = sys.argv[1], sys.argv[2:]
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    bundle = train(variant_config(overrides))
    out = Path("/tmp/gas-variants") / name
    bundle.save(out)
    e = bundle.calibration.get("energy_per_inference_j", 0.0)
    print(f"{name}: trained in {time.perf_counter() - t0:.0f} s, {1e9 * e:.1f} nJ/inference")


if __name__ == "__main__":
    main()
