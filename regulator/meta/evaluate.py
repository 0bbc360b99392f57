"""Few-shot evaluation of a prior against its peers, as JSON-able tables.

:func:`evaluate` scores K-shot adaptation on held-out environments of a task family
(environment seeds ``>= HELDOUT_SEED_BASE``, a range meta-training never draws from)
for the meta prior, the same network trained jointly on pooled training environments
then fine-tuned on the same shots with plain SGD, a randomly initialised network whose
readout is trained on the shots ("scratch"), and no adaptation. Each row gives the mean
and a 95% t-interval over tasks, plus adaptation time, weight writes and learning energy.

The gas-drift protocol (a prior trained on batch 1 only, scored on later batches) is
in :mod:`regulator.meta.gas_protocol`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from tqdm import tqdm

from regulator.chip.network import ChipInstance, SpikingNetwork
from regulator.errors import ConfigError, NotEnoughSamplesError
from regulator.meta.adapt import AdaptationReport, adapt, metric, task_loss
from regulator.meta.model import ModelBundle
from regulator.meta.peers import PEER_NAMES, SOURCE_PEERS, Peers, SourceData
from regulator.tasks.base import TaskFamily, make_family

log = logging.getLogger(__name__)

HELDOUT_SEED_BASE = 2**31
"""Held-out environment seeds start here; meta-training draws seeds below 2**31 - 1."""

SGD_LRS = (0.3, 1.0, 3.0)
"""Plain-SGD readout rates tried for the baselines (chosen on training environments)."""

SGD_LRS_INPUT = (0.03, 0.1, 0.3, 1.0)
"""Plain-SGD rates tried for baselines that adapt the input stage and the readout."""

__all__ = [
    "HELDOUT_SEED_BASE",
    "evaluate",
    "family_for",
    "interval",
    "query_metric",
    "sgd_bundle",
    "summarise",
    "train_joint",
]


def interval(values: Sequence[float]) -> dict[str, float]:
    """Mean and 95% t-interval of ``values``.

    >>> r = interval([0.5, 0.7, 0.6])
    >>> round(r["mean"], 3), r["n"], round(r["ci95_low"], 3)
    (0.6, 3, 0.352)
    """
    v = np.asarray(values, dtype=np.float64)
    n = int(v.size)
    if n == 0:
        raise ConfigError("no values to summarise")
    mean = float(v.mean())
    half = float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return {"mean": mean, "ci95_low": mean - half, "ci95_high": mean + half, "n": n}


def family_for(bundle: ModelBundle, root: str | Path | None = None) -> TaskFamily:
    """The task family a bundle was trained on; relative data paths are resolved against
    ``root``, then the working directory, then the repository root."""
    cfg = dict(bundle.task.get("config", {}))
    if "path" in cfg and not Path(cfg["path"]).is_absolute():
        here = Path(__file__).resolve().parents[2]
        for base in (Path(root) if root else None, Path.cwd(), here):
            if base is not None and (base / cfg["path"]).exists():
                cfg["path"] = str(base / cfg["path"])
                break
    return make_family(str(bundle.task["family"]), **cfg)


def sgd_bundle(bundle: ModelBundle, lr: float, steps: int, scope: str = "readout") -> ModelBundle:
    """A clone whose adaptation is plain SGD on ``scope`` (the baselines' inner loop)."""
    b = bundle.clone()
    b.meta = {
        **b.meta,
        "algorithm": "fomaml",
        "scope": scope,
        "inner_steps": steps,
        "inner_lr": lr,
    }
    b.meta_tensors = {"log_lr": torch.tensor(math.log(lr))}
    return b


def query_metric(bundle: ModelBundle, chip: ChipInstance, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        inp = bundle.encode(x, chip.generator)
        out = bundle.network(inp, chip, input_is_spikes=bundle.encoder.spiking)
    return metric(bundle.kind, out.outputs, torch.as_tensor(y))


def _check_k(family: TaskFamily, ks: Sequence[int]) -> None:
    if not ks or any(int(k) < 1 for k in ks):
        raise ConfigError(f"ks must be positive integers, got {list(ks)}")
    rows = getattr(family, "_rows_by_class", None)
    if rows is not None:
        avail = min(len(r) for r in rows)
        if max(ks) > avail:
            raise NotEnoughSamplesError(
                f"K={max(ks)} shots per class asked, but the data of family {family.name!r} "
                f"holds only {avail} samples of its rarest class"
            )


def train_joint(
    bundle: ModelBundle,
    family: TaskFamily,
    *,
    steps: int,
    batch: int,
    lr: float,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> ModelBundle:
    """The same network trained with plain supervision on samples pooled from many
    training environments (one environment and chip instance per sample group), for
    ``steps`` Adam steps of ``batch`` samples: the joint-training peer.

    Starts from the same initialisation as meta-training; keeps the prior's normaliser,
    or, under episodic normalisation, normalises each environment's group on its own.
    """
    tc = bundle.meta.get("train_config", {})
    b = bundle.clone()
    b.network = SpikingNetwork(b.cfg, init_seed=int(tc.get("seed", seed)))
    rng = np.random.default_rng([seed, 0x101])
    opt = torch.optim.Adam(b.network.parameters(), lr=lr)
    groups = 4
    per = max(1, batch // groups)
    for it in range(steps):
        opt.zero_grad()
        for _ in range(groups):
            env = family.environment_from_seed(int(rng.integers(0, 2**31 - 1)))
            chip = ChipInstance.create(b.profile, b.cfg, int(rng.integers(0, 2**31 - 1)))
            x, y = family.sample(env, per, rng)
            norm = b.support_normaliser(x) if b.episode_normalisation else None
            out = b.network(
                b.encode(x, chip.generator, normaliser=norm),
                chip,
                input_is_spikes=b.encoder.spiking,
            )
            (task_loss(b.kind, out.outputs, torch.as_tensor(y)) / groups).backward()
        torch.nn.utils.clip_grad_norm_(list(b.network.parameters()), 5.0)
        opt.step()
        if progress is not None:
            progress(it)
    b.meta = {k: v for k, v in b.meta.items() if k != "train_env_seeds"}
    b.meta["joint_training"] = {"steps": steps, "batch": batch, "lr": lr, "seed": seed}
    return b


def _tune_sgd(
    bundle: ModelBundle,
    family: TaskFamily,
    steps: int,
    k: int,
    seed: int,
    n_tasks: int = 4,
    scope: str = "readout",
) -> float:
    """The plain-SGD rate on ``scope`` that does best on training-distribution tasks
    (never on held-out environments)."""
    rng = np.random.default_rng([seed, 0x7E5])
    tasks = []
    for _ in range(n_tasks):
        env = family.environment_from_seed(int(rng.integers(0, 2**31 - 1)))
        tasks.append((family.episode(env, k, 40, rng), int(rng.integers(0, 2**31 - 1))))
    lrs = SGD_LRS_INPUT if scope == "input" else SGD_LRS
    best, best_lr = -math.inf, lrs[0]
    for lr in lrs:
        cand = sgd_bundle(bundle, lr, steps, scope)
        scores = []
        for ep, cs in tasks:
            chip = ChipInstance.create(bundle.profile, bundle.cfg, cs)
            new, _ = adapt(cand, ep.support_x, ep.support_y, chip)
            m = query_metric(new, chip, ep.query_x, ep.query_y)
            scores.append(m if bundle.kind == "classification" else -m)
        if float(np.mean(scores)) > best:
            best, best_lr = float(np.mean(scores)), lr
    return best_lr


def summarise(
    per_task: dict[str, list[float]],
    reports: dict[str, list[AdaptationReport]],
    energy_per_inference_j: float,
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name, vals in per_task.items():
        row: dict[str, Any] = {"metric": interval(vals)}
        reps = reports.get(name, [])
        if reps:
            le = float(np.mean([r.learning_energy_j for r in reps]))
            row.update(
                seconds=interval([r.seconds for r in reps]),
                weight_writes=float(np.mean([r.weight_writes for r in reps])),
                learning_energy_j=le,
                learning_energy_inferences=le / energy_per_inference_j
                if energy_per_inference_j > 0
                else None,
            )
        rows[name] = row
    return rows


def evaluate(
    bundle: ModelBundle,
    family: TaskFamily | None = None,
    *,
    ks: Sequence[int] = (1, 5, 10),
    n_tasks: int = 100,
    n_query: int = 60,
    seed: int = 0,
    joint: ModelBundle | None = None,
    plasticity: ModelBundle | None = None,
    baseline_steps: int = 25,
    train_envs: bool = True,
    progress: bool = False,
    skeptic_peers: bool = True,
) -> dict[str, Any]:
    """K-shot table of ``bundle`` and its peers on held-out environments (JSON-able).

    With ``skeptic_peers`` (classification) the rows of :mod:`regulator.meta.peers`
    (logistic regression, nearest class mean, dense MLPs) are scored on the same shots
    and query samples; their source data are samples of training environments
    (:func:`source_from_family`). Each row states the labels it used.

    ``joint`` is the jointly trained peer (:func:`train_joint`); without it that row is
    left out. ``plasticity`` is a prior with the three-factor rule, scored on the same
    tasks. The baselines' plain-SGD rate is chosen on training-distribution tasks and
    they run ``baseline_steps`` steps. With ``train_envs`` the meta prior is also scored
    at each K on the training environments it saw (``bundle.meta["train_env_seeds"]``).
    Same arguments, same table (every draw is seeded by ``seed``).
    """
    fam = family if family is not None else family_for(bundle)
    _check_k(fam, ks)
    if n_tasks < 2:
        raise ConfigError(f"n_tasks must be >= 2 for an interval, got {n_tasks}")
    if bundle.meta.get("algorithm") is not None:
        from regulator.meta.algorithms import make_algorithm

        make_algorithm(str(bundle.meta["algorithm"]))
    t_start = time.perf_counter()
    k_tune = int(ks[len(ks) // 2])
    peers: dict[str, ModelBundle] = {"meta": bundle}
    tuned: dict[str, float] = {}
    if plasticity is not None:
        peers["plasticity"] = plasticity
    # The baselines fine-tune the same parameters the prior adapts.
    scope = str(bundle.meta.get("scope", "readout"))
    if scope == "all":
        scope = "readout"
    if joint is not None:
        tuned["joint_finetune"] = _tune_sgd(joint, fam, baseline_steps, k_tune, seed, scope=scope)
        peers["joint_finetune"] = sgd_bundle(joint, tuned["joint_finetune"], baseline_steps, scope)
    scratch = bundle.clone()
    scratch.network = SpikingNetwork(bundle.cfg, init_seed=seed + 12345)
    tuned["scratch"] = _tune_sgd(scratch, fam, baseline_steps, k_tune, seed, scope=scope)
    peers["scratch"] = sgd_bundle(scratch, tuned["scratch"], baseline_steps, scope)
    e_inf = float(bundle.calibration.get("energy_per_inference_j", 0.0))
    skeptic = (
        Peers.fit(source_from_family(fam, seed, signed_log=bundle.normaliser.signed_log), seed)
        if fam.kind == "classification" and skeptic_peers
        else None
    )
    table: dict[str, Any] = {}
    train_seeds = [int(s) for s in bundle.meta.get("train_env_seeds", [])]
    for k in ks:
        rng = np.random.default_rng([seed, int(k), 0xE7A1])
        per: dict[str, list[float]] = {n: [] for n in [*peers, "no_adaptation"]}
        if skeptic is not None:
            per.update({n: [] for n in PEER_NAMES})
        reps: dict[str, list[AdaptationReport]] = {n: [] for n in peers}
        if train_envs and train_seeds:
            per["meta_train_envs"] = []
        bar = tqdm(range(n_tasks), desc=f"{k}-shot", disable=not progress, leave=False)
        for t in bar:
            env = fam.environment_from_seed(HELDOUT_SEED_BASE + int(rng.integers(0, 2**30)))
            ep = fam.episode(env, int(k), n_query, rng)
            chip_seed = int(rng.integers(0, 2**31 - 1))
            for name, peer in peers.items():
                chip = ChipInstance.create(peer.profile, peer.cfg, chip_seed)
                new, rep = adapt(peer, ep.support_x, ep.support_y, chip)
                per[name].append(query_metric(new, chip, ep.query_x, ep.query_y))
                reps[name].append(rep)
            chip = ChipInstance.create(bundle.profile, bundle.cfg, chip_seed)
            per["no_adaptation"].append(query_metric(bundle, chip, ep.query_x, ep.query_y))
            if skeptic is not None:
                for name, acc in skeptic.score(
                    ep.support_x, ep.support_y, ep.query_x, ep.query_y
                ).items():
                    per[name].append(acc)
            if "meta_train_envs" in per:
                tenv = fam.environment_from_seed(train_seeds[t % len(train_seeds)])
                tep = fam.episode(tenv, int(k), n_query, rng)
                chip = ChipInstance.create(bundle.profile, bundle.cfg, chip_seed)
                new, _ = adapt(bundle, tep.support_x, tep.support_y, chip)
                per["meta_train_envs"].append(query_metric(new, chip, tep.query_x, tep.query_y))
        table[str(k)] = summarise(per, reps, e_inf)
        n_shots = int(k) * (fam.n_outputs if fam.kind == "classification" else 1)
        n_source = skeptic.n_source if skeptic is not None else 0
        for name, row in table[str(k)].items():
            row["labels"] = (
                0
                if name == "no_adaptation"
                else n_shots + (n_source if name in SOURCE_PEERS else 0)
            )
    return {
        "family": fam.name,
        "kind": bundle.kind,
        "metric": "accuracy" if bundle.kind == "classification" else "mean absolute error",
        "profile": bundle.profile.name,
        "algorithm": bundle.meta.get("algorithm"),
        "ks": [int(k) for k in ks],
        "n_tasks": n_tasks,
        "n_query": n_query,
        "seed": seed,
        "heldout_seed_base": HELDOUT_SEED_BASE,
        "baseline_steps": baseline_steps,
        "baseline_scope": scope,
        "baseline_sgd_lr": tuned,
        "energy_per_inference_j": e_inf,
        "table": table,
        "seconds": time.perf_counter() - t_start,
    }


SOURCE_ENVS = 100
SOURCE_PER_ENV = 20


def source_from_family(family: TaskFamily, seed: int, signed_log: bool = False) -> SourceData:
    """Labelled samples of ``SOURCE_ENVS`` training environments (seeds below the
    held-out range), ``SOURCE_PER_ENV`` each: the peers' source data."""
    rng = np.random.default_rng([seed, 0x50C])
    groups = []
    for _ in range(SOURCE_ENVS):
        env = family.environment_from_seed(int(rng.integers(0, HELDOUT_SEED_BASE - 1)))
        groups.append(family.sample(env, SOURCE_PER_ENV, rng))
    return SourceData(groups, family.n_outputs, signed_log)
