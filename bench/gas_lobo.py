"""Leave-one-batch-out choice of the gas-drift prior's design and readout refinement.

    python bench/gas_lobo.py [--draws 10] [--variant NAME key=value ...] ...

Each variant is the ``gas-drift`` recipe with the given TrainConfig changes (JSON values;
``family.X`` changes the simulated drift of batch 1, ``encoder.X`` the encoder), meta-
trained on batch 1 only. Every variant is then adapted with every refinement setting of
``GRID`` on 5 shots per gas of each of batches 2-5 and scored on the rest of that batch
(the same draws for every candidate). For each batch b the candidate reported is the one
with the best mean on the *other* batches, so no batch's score chose its own setting.
Writes ``bench/results/gas_lobo.{md,json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from regulator.chip.network import ChipInstance  # noqa: E402
from regulator.meta.adapt import adapt  # noqa: E402
from regulator.meta.evaluate import query_metric  # noqa: E402
from regulator.meta.gas_protocol import draw_shots  # noqa: E402
from regulator.meta.labelfree import recalibrate_label_free  # noqa: E402
from regulator.meta.model import ModelBundle  # noqa: E402
from regulator.meta.recipes import RECIPES  # noqa: E402
from regulator.meta.train import TrainConfig, build_trainer, finalise, train_steps  # noqa: E402
from regulator.tasks.formats import load_gas_drift  # noqa: E402

GRID = ((0, 0.1), (300, 1.0), (1000, 1.0))
"""Refinement (delta-rule steps, rate) tried on every variant."""
BATCHES = (2, 3, 4, 5)


def variant_config(changes: list[str]) -> TrainConfig:
    """The gas-drift recipe with ``key=value`` changes applied."""
    cfg = RECIPES["gas-drift"]
    upd: dict[str, Any] = {}
    fam = dict(cfg.family_config)
    enc = dict(cfg.encoder_config)
    for kv in changes:
        k, v = kv.split("=", 1)
        if k.startswith("family."):
            fam[k[7:]] = json.loads(v)
        elif k.startswith("encoder."):
            enc[k[8:]] = json.loads(v)
        else:
            upd[k] = json.loads(v)
    return TrainConfig.model_validate(
        {**cfg.model_dump(), **upd, "family_config": fam, "encoder_config": enc}
    )


def train(cfg: TrainConfig) -> ModelBundle:
    with contextlib.chdir(REPO):
        tr = build_trainer(cfg)
        train_steps(tr, cfg.pretrain_steps + cfg.iterations, progress=False)
        return finalise(tr)


def score_refinement(
    prior: ModelBundle,
    steps: int,
    lr: float,
    data: dict[int, tuple[np.ndarray, np.ndarray]],
    draws: int,
    labelfree: bool = False,
) -> dict[int, float]:
    """Mean accuracy per batch of ``prior`` refined ``steps`` at ``lr`` on 5 shots per
    gas (the same draws for every prior and setting: seeded by the batch alone). With
    ``labelfree`` the prior is first re-normalised without labels on the whole batch, as
    in the protocol's ``labelfree_fewshot`` row."""
    out = {}
    for b, (x, y) in data.items():
        rng = np.random.default_rng([0, b, 0x6A5])
        base = prior
        if labelfree:
            chip0 = ChipInstance.create(prior.profile, prior.cfg, 0)
            base, _ = recalibrate_label_free(prior, x, chip0)
        scores = []
        for _ in range(draws):
            sup, rest = draw_shots(y, 5, rng)
            cand = base.clone()
            cand.meta["refine_steps"], cand.meta["refine_lr"] = steps, lr
            chip = ChipInstance.create(prior.profile, prior.cfg, int(rng.integers(0, 2**31 - 1)))
            new, _ = adapt(cand, x[sup], y[sup], chip)
            scores.append(query_metric(new, chip, x[rest], y[rest]))
        out[b] = float(np.mean(scores))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument(
        "--variant", nargs="+", action="append", default=[], metavar="NAME [key=value ...]"
    )
    ap.add_argument(
        "--labelfree", action="store_true", help="label-free re-normalisation before the shots"
    )
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "gas_lobo"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    variants = {v[0]: v[1:] for v in a.variant} or {"recipe": []}
    data = {b: load_gas_drift(REPO / "data" / "gas-drift" / f"batch{b}.dat")[:2] for b in BATCHES}
    acc: dict[str, dict[int, float]] = {}
    energy: dict[str, float] = {}
    for name, changes in variants.items():
        prior = train(variant_config(changes))
        energy[name] = float(prior.calibration["energy_per_inference_j"])
        for steps, lr in GRID:
            key = f"{name}, {steps} steps @ {lr}"
            acc[key] = score_refinement(prior, steps, lr, data, a.draws, a.labelfree)
            print(key, {b: round(100 * v, 1) for b, v in acc[key].items()}, flush=True)
    chosen = {
        b: max(acc, key=lambda s, b=b: np.mean([acc[s][o] for o in BATCHES if o != b]))
        for b in BATCHES
    }
    lobo = {b: acc[chosen[b]][b] for b in BATCHES}
    out_rel = Path(a.out).resolve()
    out_rel = out_rel.relative_to(REPO) if out_rel.is_relative_to(REPO) else out_rel
    cmd = "python bench/gas_lobo.py --draws {}{} {} --out {}".format(
        a.draws,
        " --labelfree" if a.labelfree else "",
        " ".join(
            "--variant " + " ".join(shlex.quote(w) for w in [n, *c]) for n, c in variants.items()
        ),
        out_rel,
    )
    lines = [
        "# Gas drift: design and refinement chosen leave-one-batch-out",
        "",
        f"Command: `{cmd}` ({time.perf_counter() - t0:.0f} s). Variants: the `gas-drift` "
        "recipe with the changes named, meta-trained on batch 1 only; 5 shots per gas, "
        f"{a.draws} draws per batch (the same draws for every candidate).",
        "",
        "| variant | changes | energy / inference nJ |",
        "|---|---|---|",
        *(
            f"| {n} | {' '.join(c) or '(recipe)'} | {1e9 * energy[n]:.1f} |"
            for n, c in variants.items()
        ),
        "",
        "| candidate | " + " | ".join(f"batch {b}" for b in BATCHES) + " | mean |",
        "|---|" + "---|" * (len(BATCHES) + 1),
    ]
    for key, row in acc.items():
        cells = " | ".join(f"{100 * row[b]:.1f}" for b in BATCHES)
        lines.append(f"| {key} | {cells} | {100 * np.mean(list(row.values())):.1f} |")
    lines += [
        "",
        "| batch | candidate chosen on the other batches | its accuracy |",
        "|---|---|---|",
    ]
    lines += [f"| {b} | {chosen[b]} | {100 * lobo[b]:.1f} |" for b in BATCHES]
    lines += [
        "",
        f"Mean of the leave-one-batch-out figures: {100 * np.mean(list(lobo.values())):.1f}.",
    ]
    Path(a.out + ".md").write_text("\n".join(lines) + "\n")
    Path(a.out + ".json").write_text(
        json.dumps(
            {
                "command": cmd,
                "accuracy": acc,
                "energy_j": energy,
                "chosen": {str(b): c for b, c in chosen.items()},
                "lobo": {str(b): v for b, v in lobo.items()},
            },
            indent=2,
        )
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
