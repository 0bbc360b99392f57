"""Per-task choice between gas bodies by cross-validation on the shots (issue 10, round 4).

    .venv/bin/python bench/design/gas_select.py [draws] FOLDER...

For each batch 2-5, ``draws`` draws of 5 shots per gas (seeded as ``bench/gas_lobo.py``
seeds them, so the same draws as every earlier round). Every body in FOLDER... (the first
is the default) is adapted on the shots (prototype + its refinement) and scored on the
rest of the batch; and 5-fold cross-validation on the shots alone (fold j holds out the
j-th shot of every gas) gives each body a score that uses no query label. Reported: each
body alone, the body the cross-validation picks per task (ties to the first), the oracle
pick (an upper bound, not a method), and the mean-probability ensemble of all bodies.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from gas_features import seeded_draws  # the design rounds' draws

from regulator.chip.network import ChipInstance
from regulator.meta.adapt import adapt
from regulator.meta.model import ModelBundle
from regulator.meta.recipes import GAS_DIR
from regulator.tasks.formats import load_gas_drift


def probs(bundle: ModelBundle, chip: ChipInstance, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        inp = bundle.encode(x, chip.generator)
        out = bundle.network(inp, chip, input_is_spikes=bundle.encoder.spiking)
    return out.outputs.softmax(1).numpy()


def cv_score(bundle: ModelBundle, sx: np.ndarray, sy: np.ndarray, seed: int, k: int) -> float:
    """Held-out hits of k-fold cross-validation on the shots; the held-out mean
    log-probability (scaled far below one hit) breaks ties."""
    order = np.zeros(len(sy), int)
    for c in np.unique(sy):
        idx = np.flatnonzero(sy == c)
        order[idx] = np.arange(len(idx))
    hits, ll = 0.0, 0.0
    for j in range(k):
        tr, te = order != j, order == j
        chip = ChipInstance.create(bundle.profile, bundle.cfg, seed)
        new, _ = adapt(bundle, sx[tr], sy[tr], chip)
        p = probs(new, chip, sx[te])
        hits += float((p.argmax(1) == sy[te]).sum())
        ll += float(np.log(p[np.arange(te.sum()), sy[te]] + 1e-9).sum())
    return hits + 1e-3 * ll / len(sy)


def main() -> None:
    draws = int(sys.argv[1])
    opts = dict(a.split("=", 1) for a in sys.argv[2:] if "=" in a)
    with_cv = "--no-cv" not in sys.argv
    folders = [f for f in sys.argv[2:] if f != "--no-cv" and "=" not in f]
    n_unlabelled = int(opts.get("unlabelled", 10**9))
    data_dir = Path(opts.get("data", str(GAS_DIR)))
    batch_ids = [int(b) for b in opts.get("batches", "2,3,4,5").split(",")]
    bodies = [ModelBundle.load(f) for f in folders]
    names = [f.rstrip("/").split("/")[-1] for f in folders]
    torch.set_num_threads(1)
    table: dict[str, dict[int, float]] = {}
    for b in batch_ids:
        x, y = load_gas_drift(data_dir / f"batch{b}.dat")[:2]
        res: dict[str, list[float]] = {}
        for sup, rest, seed, rng in seeded_draws(y, b, draws):
            sx, sy, qx, qy = x[sup], y[sup], x[rest], y[rest]
            accs, cvs, ps = [], [], []
            for name, body in zip(names, bodies, strict=True):
                chip = ChipInstance.create(body.profile, body.cfg, seed)
                new, _ = adapt(body, sx, sy, chip)
                p = probs(new, chip, qx)
                ps.append(p)
                accs.append(float((p.argmax(1) == qy).mean()))
                cvs.append(cv_score(body, sx, sy, seed, 5) if with_cv else 0.0)
                res.setdefault(name, []).append(accs[-1])
            pick = int(np.argmax(cvs))  # argmax takes the first of ties
            # label-free criteria on the batch's other (unlabelled) inputs: confidence
            sub = rng.permutation(len(qy))[:n_unlabelled]
            conf = [float(p[sub].max(1).mean()) for p in ps]
            ent = [float(-(p[sub] * np.log(p[sub] + 1e-9)).sum(1).mean()) for p in ps]
            res.setdefault("confidence pick", []).append(accs[int(np.argmax(conf))])
            res.setdefault("entropy pick", []).append(accs[int(np.argmin(ent))])
            if not with_cv:
                cvs = [0.0] * len(accs)
            res.setdefault("cv pick", []).append(accs[pick])
            res.setdefault("oracle", []).append(max(accs))
            ens = np.mean(ps, 0)
            res.setdefault("ensemble", []).append(float((ens.argmax(1) == qy).mean()))
            res.setdefault("picked " + names[0], []).append(float(pick == 0))
        for k, v in res.items():
            table.setdefault(k, {})[b] = float(np.mean(v))
        print(
            f"batch {b}: " + ", ".join(f"{k} {100 * np.mean(v):.1f}" for k, v in res.items()),
            flush=True,
        )
    print("| method | " + " | ".join(f"batch {b}" for b in batch_ids) + " | mean |")
    print("|---|" + "---|" * (len(batch_ids) + 1))
    for k, row in table.items():
        cells = " | ".join(f"{100 * row[b]:.1f}" for b in batch_ids)
        print(f"| {k} | {cells} | {100 * np.mean(list(row.values())):.1f} |")


if __name__ == "__main__":
    main()
