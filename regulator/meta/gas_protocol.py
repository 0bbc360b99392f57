"""The gas-drift protocol: a prior trained on batch 1 only, scored on later batches.

:func:`evaluate_gas_drift`: for each later batch, K labelled samples per gas present
drawn at random (:func:`draw_shots`), accuracy on the rest of that batch, for the prior
(no adaptation, label-free re-normalisation, its few-shot inner loop, both), a plain
dense network trained on batch 1 and fine-tuned on the same shots (:func:`train_dense`),
and every skeptic's peer of :mod:`regulator.meta.peers`, in one run on the same draws.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from regulator.chip.network import ChipInstance
from regulator.errors import ConfigError, DataFormatError, NotEnoughSamplesError
from regulator.meta.adapt import AdaptationReport, adapt
from regulator.meta.evaluate import query_metric, summarise
from regulator.meta.labelfree import recalibrate_label_free
from regulator.meta.model import ModelBundle
from regulator.meta.peers import PEER_NAMES, SOURCE_PEERS, Peers, SourceData
from regulator.tasks.formats import load_gas_drift
from regulator.tasks.normalisation import Normaliser

__all__ = ["draw_shots", "evaluate_gas_drift", "train_dense"]


class _Dense(nn.Module):
    """A plain (non-spiking) MLP on the same normalised features."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(n_in, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    lr: float,
    batch: int,
    seed: int,
) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()


def train_dense(
    x: np.ndarray,
    y: np.ndarray,
    normaliser: Normaliser,
    *,
    n_hidden: int = 64,
    epochs: int = 200,
    seed: int = 0,
    n_classes: int | None = None,
) -> nn.Module:
    """The dense peer: an MLP trained on ``x`` scaled by ``normaliser`` (batch 1), with
    ``n_classes`` outputs (default: the classes in ``y``; a later batch may hold a class
    that the training batch does not)."""
    torch.manual_seed(seed)
    model = _Dense(int(np.prod(x.shape[1:])), n_hidden, n_classes or int(y.max()) + 1)
    xt = torch.from_numpy(np.clip(normaliser.transform(x), -10, 10))
    _fit(model, xt, torch.as_tensor(y), epochs, 3e-3, 64, seed)
    return model


def _dense_finetune_acc(
    model: nn.Module,
    norm: Normaliser,
    sx: np.ndarray,
    sy: np.ndarray,
    qx: np.ndarray,
    qy: np.ndarray,
    steps: int,
    seed: int,
) -> float:
    m = copy.deepcopy(model)
    xs = torch.from_numpy(np.clip(norm.transform(sx), -10, 10))
    _fit(m, xs, torch.as_tensor(sy), steps, 1e-3, len(xs), seed)
    with torch.no_grad():
        out = m(torch.from_numpy(np.clip(norm.transform(qx), -10, 10)))
    return float((out.argmax(1).numpy() == qy).mean())


def draw_shots(y: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``k`` random rows of every class in ``y`` (the shots) and the rest (the queries)."""
    sup = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), k, replace=False) for c in np.unique(y)]
    )
    rest = np.setdiff1d(np.arange(len(y)), sup)
    return sup, rest


def evaluate_gas_drift(
    bundle: ModelBundle,
    data_dir: str | Path,
    *,
    k_per_class: int = 5,
    draws: int = 20,
    seed: int = 0,
    batches: Sequence[int] = (2, 3, 4, 5),
    dense_finetune_steps: int = 30,
    progress: bool = False,
) -> dict[str, Any]:
    """The gas-drift protocol (trained on batch 1 only; see the module docstring).

    For each batch: ``draws`` random draws of ``k_per_class`` labelled samples of every
    gas present in the batch; accuracy on the batch's other samples. Label-free
    re-normalisation sees the whole batch without labels. Rows: ``no_adaptation``,
    ``labelfree``, ``fewshot`` (the prior's inner loop), ``labelfree_fewshot``,
    ``dense_finetune`` (MLP trained on batch 1, every weight fine-tuned on the shots with
    Adam for ``dense_finetune_steps`` steps) and ``dense_labelfree_finetune`` (the same
    after re-fitting its input scaling on the batch). Mean and 95% interval per batch.
    """
    data = Path(data_dir)
    if k_per_class < 1 or draws < 2:
        raise ConfigError("k_per_class must be >= 1 and draws >= 2")
    paths = {b: data / f"batch{b}.dat" for b in (1, *batches)}
    for b, p in paths.items():
        if not p.is_file():
            raise ConfigError(f"gas-drift batch {b} not found: {p}")
    loaded = {b: load_gas_drift(p)[:2] for b, p in paths.items()}
    n_classes = int(bundle.cfg.n_outputs)
    for b in (1, *batches):
        if int(loaded[b][1].max()) >= n_classes:
            raise DataFormatError(
                f"gas-drift batch {b}: gas {int(loaded[b][1].max()) + 1} found, but the prior "
                f"classifies {n_classes} gases"
            )
    for b in batches:
        counts = np.bincount(loaded[b][1])
        short = [(c, int(n)) for c, n in enumerate(counts) if 0 < n < k_per_class]
        if short:
            raise NotEnoughSamplesError(
                f"batch {b}: {k_per_class} labelled samples per class asked, but "
                + ", ".join(f"gas {c + 1} has {n}" for c, n in short)
            )
    t_start = time.perf_counter()
    x1, y1 = loaded[1]
    dense_norm = Normaliser(bundle.normaliser.method, bundle.normaliser.signed_log).fit(x1)
    dense = train_dense(x1, y1, dense_norm, seed=seed, n_classes=n_classes)
    skeptic = Peers.fit(SourceData([(x1, y1)], n_classes, signed_log=True), seed)
    e_inf = float(bundle.calibration.get("energy_per_inference_j", 0.0))
    rows: dict[str, Any] = {}
    means: dict[str, list[float]] = {}
    for b in tqdm(batches, desc="gas-drift batches", disable=not progress, leave=False):
        x, y = loaded[b]
        chip = ChipInstance.create(bundle.profile, bundle.cfg, seed)
        lf, lf_rep = recalibrate_label_free(bundle, x, chip)
        dn_lf = Normaliser(dense_norm.method, dense_norm.signed_log).fit(x)
        rng = np.random.default_rng([seed, b, 0x6A5])
        per: dict[str, list[float]] = {
            n: []
            for n in (
                "no_adaptation",
                "labelfree",
                "fewshot",
                "labelfree_fewshot",
                "dense_finetune",
                "dense_labelfree_finetune",
            )
        }
        per.update({n: [] for n in PEER_NAMES})
        reps: dict[str, list[AdaptationReport]] = {"fewshot": [], "labelfree_fewshot": []}
        for d in range(draws):
            sup, rest = draw_shots(y, k_per_class, rng)
            sx, sy, qx, qy = x[sup], y[sup], x[rest], y[rest]
            chip_seed = int(rng.integers(0, 2**31 - 1))
            for name, base in (("no_adaptation", bundle), ("labelfree", lf)):
                chip = ChipInstance.create(bundle.profile, bundle.cfg, chip_seed)
                per[name].append(query_metric(base, chip, qx, qy))
            for name, base in (("fewshot", bundle), ("labelfree_fewshot", lf)):
                chip = ChipInstance.create(bundle.profile, bundle.cfg, chip_seed)
                new, rep = adapt(base, sx, sy, chip)
                per[name].append(query_metric(new, chip, qx, qy))
                reps[name].append(rep)
            per["dense_finetune"].append(
                _dense_finetune_acc(dense, dense_norm, sx, sy, qx, qy, dense_finetune_steps, d)
            )
            per["dense_labelfree_finetune"].append(
                _dense_finetune_acc(dense, dn_lf, sx, sy, qx, qy, dense_finetune_steps, d)
            )
            for name, acc in skeptic.score(sx, sy, qx, qy).items():
                per[name].append(acc)
        row = summarise(per, reps, e_inf)
        row["labelfree"]["report"] = lf_rep.to_dict()
        n_shots = k_per_class * len(np.unique(y))
        for name, r in row.items():
            r["labels"] = (
                0
                if name in ("no_adaptation", "labelfree")
                else n_shots + (len(y1) if name in SOURCE_PEERS else 0)
            )
        row["n_samples"] = len(y)
        row["classes_present"] = [int(c) + 1 for c in np.unique(y)]
        rows[str(b)] = row
        for name, vals in per.items():
            means.setdefault(name, []).append(float(np.mean(vals)))
    return {
        "protocol": "train on batch 1 only; K labelled samples per gas from each later batch",
        "k_per_class": k_per_class,
        "draws": draws,
        "seed": seed,
        "profile": bundle.profile.name,
        "batches": [int(b) for b in batches],
        "energy_per_inference_j": e_inf,
        "dense": {
            "hidden": 64,
            "epochs": 200,
            "finetune_steps": dense_finetune_steps,
            "finetune": "Adam lr 1e-3, every weight",
        },
        "table": rows,
        "mean_over_batches": {n: float(np.mean(v)) for n, v in means.items()},
        "seconds": time.perf_counter() - t_start,
    }
