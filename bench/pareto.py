"""Accuracy against energy per inference: spiking configurations and the dense peers.

    python bench/pareto.py [--runs 3] [--draws 5] [--iterations 400]

The gas-drift task (train on batch 1 only, 5 labels per gas from each of batches 2-5,
scored on the rest of the batch): every spiking configuration below is meta-trained
with the ``gas-drift`` recipe and that one change (width, time steps, held input steps,
i.e. activity), adapted on the shots by its own inner loop, and scored; the peers
(logistic regression, nearest class mean, the dense MLPs) run on the same shots and
query samples in the same run. Energy: the chip's calibrated energy per inference
(loihi figures) against each dense peer's multiply-accumulates with their weight reads
(:func:`regulator.chip.energy.dense_energy_j`). Each run draws new shots (seed 100 + r);
reported: median and range over runs of the mean over batches 2-5. Writes
``bench/results/pareto.{json,md,png}``; the Pareto front is the set of points no other
point beats on both accuracy and energy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from regulator.chip.energy import dense_energy_j  # noqa: E402
from regulator.chip.network import ChipInstance  # noqa: E402
from regulator.meta.adapt import adapt  # noqa: E402
from regulator.meta.evaluate import query_metric  # noqa: E402
from regulator.meta.gas_protocol import draw_shots  # noqa: E402
from regulator.meta.model import ModelBundle  # noqa: E402
from regulator.meta.peers import MLP_HIDDEN, PEER_LABELS, Peers, SourceData  # noqa: E402
from regulator.meta.recipes import RECIPES  # noqa: E402
from regulator.meta.train import TrainConfig, build_trainer, finalise, train_steps  # noqa: E402
from regulator.tasks.formats import load_gas_drift  # noqa: E402

RESULTS = REPO / "bench" / "results"
BATCHES = (2, 3, 4, 5)
CONFIGS: dict[str, dict[str, Any]] = {
    "32 hidden, 4 steps, 1-step pulse": {"hidden": (32,)},
    "64 hidden, 4 steps, 1-step pulse (recipe)": {},
    "128 hidden, 4 steps, 1-step pulse": {"hidden": (128,)},
    "64 hidden, 2 steps, 1-step pulse": {"n_steps": 2},
    "64 hidden, 4 steps, held 4 steps": {"encoder_config": {"n_bins": 1, "hold_steps": 4}},
    "64 hidden, 8 steps, held 8 steps": {
        "n_steps": 8,
        "encoder_config": {"n_bins": 1, "hold_steps": 8},
    },
}
PEERS = ("lr_scratch", "lr_source", "ncm", "mlp_renorm")


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def train_config(change: dict[str, Any], iterations: int) -> ModelBundle:
    cfg = TrainConfig.model_validate(
        {**RECIPES["gas-drift"].model_dump(), **change, "iterations": iterations}
    )
    with contextlib.chdir(REPO):
        tr = build_trainer(cfg)
        train_steps(tr, cfg.pretrain_steps + cfg.iterations, progress=False)
        return finalise(tr)


def peer_energy_j(peer: str, n_features: int, n_classes: int) -> float:
    if peer.startswith("mlp"):
        return dense_energy_j(n_features * MLP_HIDDEN + MLP_HIDDEN * n_classes)
    return dense_energy_j(n_features * n_classes)


def score_run(
    bundles: dict[str, ModelBundle],
    peers: Peers,
    data: dict[int, tuple[np.ndarray, np.ndarray]],
    draws: int,
    seed: int,
) -> dict[str, float]:
    """Mean accuracy over batches 2-5 of every configuration and peer, same draws."""
    acc: dict[str, list[float]] = {}
    for b, (x, y) in data.items():
        rng = np.random.default_rng([seed, b, 0x9A7])
        per: dict[str, list[float]] = {}
        for _ in range(draws):
            sup, rest = draw_shots(y, 5, rng)
            sx, sy, qx, qy = x[sup], y[sup], x[rest], y[rest]
            chip_seed = int(rng.integers(0, 2**31 - 1))
            for name, bundle in bundles.items():
                chip = ChipInstance.create(bundle.profile, bundle.cfg, chip_seed)
                new, _ = adapt(bundle, sx, sy, chip)
                per.setdefault(name, []).append(query_metric(new, chip, qx, qy))
            for name, a in peers.score(sx, sy, qx, qy).items():
                if name in PEERS:
                    per.setdefault(name, []).append(a)
        for name, vals in per.items():
            acc.setdefault(name, []).append(float(np.mean(vals)))
    return {name: float(np.mean(v)) for name, v in acc.items()}


def front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the points (accuracy, energy) that no other point dominates."""
    out = []
    for n, (a, e) in points.items():
        if not any(a2 >= a and e2 <= e and (a2, e2) != (a, e) for a2, e2 in points.values()):
            out.append(n)
    return out


def plot(points: dict[str, tuple[float, float]], on_front: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for n, (a, e) in points.items():
        spiking = n not in PEER_LABELS
        ax.scatter(
            e * 1e9,
            100 * a,
            marker="o" if spiking else "s",
            color="tab:blue" if spiking else "tab:orange",
            edgecolor="black" if n in on_front else "none",
            s=60,
        )
        ax.annotate(
            n if spiking else PEER_LABELS[n],
            (e * 1e9, 100 * a),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel("energy per inference, nJ (chip: loihi figures; peers: MACs + weight reads)")
    ax.set_ylabel("accuracy %, mean over gas batches 2-5")
    ax.set_title("Gas drift, 5 labels per gas: accuracy against energy (outlined: Pareto front)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=RECIPES["gas-drift"].iterations)
    a = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    gas = REPO / "data" / "gas-drift"
    data = {b: load_gas_drift(gas / f"batch{b}.dat")[:2] for b in BATCHES}
    x1, y1 = load_gas_drift(gas / "batch1.dat")[:2]
    bundles = {n: train_config(c, a.iterations) for n, c in CONFIGS.items()}
    energy = {n: float(b.calibration["energy_per_inference_j"]) for n, b in bundles.items()}
    n_feat, n_cls = x1.shape[1] * x1.shape[2], int(y1.max()) + 1
    energy.update({p: peer_energy_j(p, n_feat, n_cls) for p in PEERS})
    peers = Peers.fit(SourceData([(x1, y1)], n_cls, signed_log=True), seed=0)
    runs = []
    for r in range(a.runs):
        runs.append(score_run(bundles, peers, data, a.draws, seed=100 + r))
        print(f"run {r + 1}/{a.runs} done", flush=True)
    names = list(runs[0])
    acc = {n: summary([run[n] for run in runs]) for n in names}
    points = {n: (acc[n]["median"], energy[n]) for n in names}
    on_front = front(points)
    res = {
        "command": f"python bench/pareto.py --runs {a.runs} --draws {a.draws}",
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "iterations": a.iterations,
        "accuracy": acc,
        "energy_per_inference_j": energy,
        "pareto_front": on_front,
        "runs": runs,
        "seconds": time.perf_counter() - t0,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pareto.json").write_text(json.dumps(res, indent=2))
    plot(points, on_front, RESULTS / "pareto.png")
    lines = [
        "# Accuracy against energy (gas drift, 5 labels per gas, batches 2-5)",
        "",
        f"Command: `{res['command']}` ({res['seconds']:.0f} s; {res['machine']}). Spiking "
        f"configurations: the `gas-drift` recipe with one change, {a.iterations} "
        "meta-iterations each, adapted by their own inner loop; peers on the same shots "
        "and query samples. Accuracy: median [range] over runs of the mean over "
        "batches. Plot: `pareto.png`.",
        "",
        "| configuration | accuracy % | energy / inference nJ | on the front |",
        "|---|---|---|---|",
    ]
    for n in sorted(names, key=lambda k: energy[k]):
        s = acc[n]
        label = PEER_LABELS.get(n, n)
        lines.append(
            f"| {label} | {100 * s['median']:.1f} [{100 * s['min']:.1f}, {100 * s['max']:.1f}] "
            f"| {1e9 * energy[n]:.1f} | {'yes' if n in on_front else ''} |"
        )
    (RESULTS / "pareto.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
