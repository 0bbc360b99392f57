"""How far apart are a task family's environments? (run by hand: python bench/tasks_shift.py)

For each family: train a small MLP in one environment, test it in every other one.
A large gap between in-environment and cross-environment scores means a static model
fails under shift, so the family needs adaptation. Two cheap recoveries are measured
in the same run, as the peers any adaptation method must beat: label-free re-fitting
of the input normaliser on the target environment, and a naive K-shot fine-tune.

The same table for the real gas-drift batches (train on batch 1, test on 2..5).

Writes bench/results/tasks_shift.json and bench/results/tasks_shift.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from regulator.tasks import Normaliser, make_family  # noqa: E402
from regulator.tasks.base import Environment, TaskFamily  # noqa: E402
from regulator.tasks.file_family import FileFamily  # noqa: E402
from regulator.tasks.formats import LabelledData, load_gas_drift  # noqa: E402

GAS = REPO / "data" / "gas-drift"


def mlp(n_in: int, n_out: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in, 64), nn.ReLU(), nn.Linear(64, n_out))


def train(
    model: nn.Module, x: np.ndarray, y: np.ndarray, regression: bool, epochs: int, lr: float = 3e-3
) -> nn.Module:
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn: nn.Module = nn.MSELoss() if regression else nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            out = model(xt[idx])
            loss = loss_fn(out.squeeze(-1), yt[idx]) if regression else loss_fn(out, yt[idx])
            loss.backward()
            opt.step()
    return model


@torch.no_grad()
def score(model: nn.Module, x: np.ndarray, y: np.ndarray, regression: bool) -> float:
    """Accuracy (classification) or R² (regression)."""
    out = model(torch.from_numpy(x)).squeeze(-1).numpy()
    if regression:
        return float(1.0 - np.mean((out - y) ** 2) / np.var(y))
    return float(np.mean(out.argmax(-1) == y))


def clone(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def family_matrix(
    fam: TaskFamily, n_envs: int, n_train: int, n_test: int, k_shot: int, epochs: int, seed: int
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    envs: list[Environment] = [fam.nominal_environment()]
    envs += [fam.sample_environment(rng) for _ in range(n_envs - 1)]
    regression = fam.kind == "regression"
    train_sets = [fam.sample(e, n_train, rng) for e in envs]
    test_sets = [fam.sample(e, n_test, rng) for e in envs]
    n_in = fam.n_channels * fam.length
    n_out = 1 if regression else fam.n_outputs
    y_scale = float(np.std(train_sets[0][1])) if regression else 1.0

    def ys(y: np.ndarray) -> np.ndarray:
        return (y / y_scale).astype(np.float32) if regression else y

    matrix = np.zeros((n_envs, n_envs))
    renorm = np.zeros((n_envs, n_envs))
    fine = np.zeros((n_envs, n_envs))
    for i, (xtr, ytr) in enumerate(train_sets):
        norm = Normaliser("standard").fit(xtr)
        model = train(mlp(n_in, n_out, seed + i), norm.transform(xtr), ys(ytr), regression, epochs)
        for j, (xte, yte) in enumerate(test_sets):
            matrix[i, j] = score(model, norm.transform(xte), ys(yte), regression)
            if i == j:
                renorm[i, j] = fine[i, j] = matrix[i, j]
                continue
            # Label-free: re-fit the normaliser on the target's unlabelled training inputs.
            target_norm = Normaliser("standard").fit(train_sets[j][0])
            renorm[i, j] = score(model, target_norm.transform(xte), ys(yte), regression)
            # K-shot fine-tune (all weights) from the source model, on the re-fitted inputs.
            if regression:
                sx, sy = fam.sample(envs[j], k_shot, rng)
            else:
                ep = fam.episode(envs[j], k_shot, 1, rng)
                sx, sy = ep.support_x, ep.support_y
            tuned = train(clone(model), target_norm.transform(sx), ys(sy), regression, 30, 1e-3)
            fine[i, j] = score(tuned, target_norm.transform(xte), ys(yte), regression)
    off = ~np.eye(n_envs, dtype=bool)
    return {
        "family": fam.name,
        "config": fam.config(),
        "metric": "r2" if regression else "accuracy",
        "env_seeds": [e.seed for e in envs],
        "n_train": n_train,
        "n_test": n_test,
        "k_shot": k_shot,
        "matrix": matrix.round(4).tolist(),
        "in_env": float(np.mean(np.diag(matrix))),
        "cross_env": float(np.mean(matrix[off])),
        "cross_env_median": float(np.median(matrix[off])),
        "cross_env_worst": float(np.min(matrix[off])),
        "cross_env_renorm": float(np.mean(renorm[off])),
        "cross_env_kshot": float(np.mean(fine[off])),
    }


def gas_drift(k_shot: int, epochs: int, seed: int) -> dict[str, Any]:
    batches = [LabelledData(*load_gas_drift(GAS / f"batch{b}.dat")) for b in range(1, 6)]
    x1, y1 = batches[0].x, batches[0].y
    norm = Normaliser("standard", signed_log=True).fit(x1)
    model = train(mlp(128, 6, seed), norm.transform(x1), y1, False, epochs)
    rng = np.random.default_rng(seed)
    rows = []
    for b, data in enumerate(batches[1:], start=2):
        static = score(model, norm.transform(data.x), data.y, False)
        target = Normaliser("standard", signed_log=True).fit(data.x)  # unlabelled batch
        renorm = score(model, target.transform(data.x), data.y, False)
        # K shots per class present, from the target batch; scored on the rest.
        shots = np.concatenate(
            [
                rng.choice(np.flatnonzero(data.y == c), k_shot, replace=False)
                for c in np.unique(data.y)
            ]
        )
        rest = np.setdiff1d(np.arange(len(data.y)), shots)
        tuned = train(clone(model), norm.transform(data.x[shots]), data.y[shots], False, 30, 1e-3)
        fine = score(tuned, norm.transform(data.x[rest]), data.y[rest], False)
        rows.append(
            {
                "batch": b,
                "n": len(data.y),
                "static": static,
                "renorm": renorm,
                f"{k_shot}shot": fine,
            }
        )
    in_batch = score(model, norm.transform(x1), y1, False)
    fitted = FileFamily.fit_drift(batches)
    return {
        "train_batch": 1,
        "train_accuracy": in_batch,
        "k_shot": k_shot,
        "rows": rows,
        "fitted_drift_per_batch": fitted,
    }


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Task families: how far apart are environments?",
        "",
        f"Command: `{res['command']}`  ",
        f"Machine: {res['machine']}  ",
        f"Wall time: {res['wall_s']:.0f} s",
        "",
        "A small MLP (inputs → 64 ReLU → outputs) trained in one environment and tested in "
        "every other. `renorm`: the input normaliser re-fitted on the target's unlabelled "
        "inputs; `k-shot`: that plus a fine-tune on K labelled samples (per class).",
        "",
        "| family | metric | envs | in-env | cross-env mean | median | worst | renorm | k-shot |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in res["families"]:
        lines.append(
            f"| {f['family']} | {f['metric']} | {len(f['env_seeds'])} | {f['in_env']:.3f} | "
            f"{f['cross_env']:.3f} | {f['cross_env_median']:.3f} | {f['cross_env_worst']:.3f} | "
            f"{f['cross_env_renorm']:.3f} | "
            f"{f['cross_env_kshot']:.3f} (K={f['k_shot']}) |"
        )
    g = res.get("gas_drift")
    if g:
        k = g["k_shot"]
        lines += [
            "",
            "## Gas-drift batches (real data): trained on batch 1 "
            f"(in-batch {g['train_accuracy']:.3f})",
            "",
            f"| batch | n | static | label-free renorm | {k}-shot/class fine-tune |",
            "|---|---|---|---|---|",
        ]
        for r in g["rows"]:
            lines.append(
                f"| {r['batch']} | {r['n']} | {r['static']:.3f} | {r['renorm']:.3f} | "
                f"{r[f'{k}shot']:.3f} |"
            )
        fd = g["fitted_drift_per_batch"]
        lines += [
            "",
            f"Drift fitted from batches 1..5 (`FileFamily.fit_drift`): gain_step "
            f"{fd['gain_step']:.3f} (log-gain per batch), class_gain_step "
            f"{fd['class_gain_step']:.3f}, offset_step {fd['offset_step']:.3f} "
            "(× feature spread per batch).",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    families: list[TaskFamily] = [make_family("nanosensor"), make_family("navigation")]
    if GAS.exists():
        families.append(make_family("file", path=str(GAS / "batch1.dat"), group_size=8))
    results = [family_matrix(f, args.envs, 600, 400, 5, 40, args.seed) for f in families]
    for r in results:
        print(
            f"{r['family']}: in {r['in_env']:.3f} cross {r['cross_env']:.3f} "
            f"renorm {r['cross_env_renorm']:.3f} kshot {r['cross_env_kshot']:.3f}",
            flush=True,
        )
    res: dict[str, Any] = {
        "command": " ".join(["python bench/tasks_shift.py", *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()}, torch {torch.__version__} (1 thread)",
        "families": results,
        "gas_drift": gas_drift(5, 60, args.seed) if GAS.exists() else None,
    }
    res["wall_s"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tasks_shift.json").write_text(json.dumps(res, indent=1) + "\n")
    (args.out / "tasks_shift.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
