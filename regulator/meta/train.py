"""Meta-training a prior with the chip in the loop.

Each task of a meta-batch draws an environment from the family and a chip instance
(fresh mismatch) from the profile; forwards carry the profile's noise and quantisation
(straight-through), so the prior learns to adapt on the hardware it will run on.
Progress shows on a bar; a checkpoint every few iterations lets training resume.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from regulator import atomic
from regulator.chip.encoders import make_encoder
from regulator.chip.network import ChipInstance, NetworkConfig, SpikingNetwork
from regulator.chip.profiles import load_profile
from regulator.errors import ConfigError
from regulator.meta.algorithms import make_algorithm
from regulator.meta.dense_init import init_from_dense, keep_converted
from regulator.meta.inner import (
    INPUT_PARAMS,
    input_start,
)
from regulator.meta.model import ModelBundle
from regulator.meta.rehearsal import attach_source
from regulator.tasks.base import TaskFamily, make_family
from regulator.tasks.file_family import FileFamily
from regulator.tasks.normalisation import Normaliser

if TYPE_CHECKING:
    from regulator.meta.eval_tasks import Submitter

from regulator.meta.episodes import joint_step, task_step
from regulator.meta.trainer import TrainConfig, Trainer

__all__ = [
    "TrainConfig",
    "Trainer",
    "build_trainer",
    "calibrate",
    "finalise",
    "load_checkpoint",
    "save_checkpoint",
    "train_prior",
    "train_steps",
]

log = logging.getLogger(__name__)


def _fit_normaliser(cfg: TrainConfig, family: TaskFamily, rng: np.random.Generator) -> Normaliser:
    xs = [family.sample(family.sample_environment(rng), 64, rng)[0] for _ in range(16)]
    xs.append(family.sample(family.nominal_environment(), 128, rng)[0])
    return Normaliser(cfg.normalisation, signed_log=cfg.signed_log).fit(np.concatenate(xs))


def build_trainer(cfg: TrainConfig) -> Trainer:
    """A fresh run: family, normaliser, network, meta-parameters, optimiser."""
    make_algorithm(cfg.algorithm)
    profile = load_profile(cfg.profile)
    family = make_family(cfg.family, **cfg.family_config)
    rng = np.random.default_rng(cfg.seed)
    encoder = make_encoder(cfg.encoder, **cfg.encoder_config)
    net_cfg = NetworkConfig(
        n_inputs=encoder.n_inputs(family.n_channels),
        hidden=cfg.hidden,
        recurrent=cfg.recurrent,
        n_outputs=family.n_outputs,
        n_steps=cfg.n_steps,
        dt_s=cfg.dt_s,
        tau_syn_inv=cfg.tau_syn_inv,
        readout_skip=cfg.rehearsal,
    )
    if cfg.rehearsal and not isinstance(family, FileFamily):
        raise ConfigError("rehearsal needs a file family (its rows are the source samples)")
    net = SpikingNetwork(net_cfg, init_seed=cfg.seed)
    algo = make_algorithm(cfg.algorithm)
    if cfg.scope == "input" and algo.name in ("reptile", "plasticity"):
        raise ConfigError(f"scope 'input' needs a gradient rule, not {algo.name!r}")
    if cfg.scope == "all" and algo.name == "plasticity":
        raise ConfigError("the plasticity rule adapts the readout only (scope 'readout')")
    adapt_params: dict[str, torch.Tensor]
    if algo.name == "prototype" and cfg.scope != "readout":
        raise ConfigError("the prototype readout adapts the readout only (scope 'readout')")
    if cfg.scope == "readout":
        adapt_params = {k: v for k, v in net.named_parameters() if k.startswith("readout.")}
    elif cfg.scope == "input":
        adapt_params = input_start(net)
    else:
        adapt_params = dict(net.named_parameters())
    meta = algo.init_meta(adapt_params, cfg.inner_lr)
    if algo.name == "metasgd":
        # The input stage starts with its own rate (gains and offsets are few and strong).
        for k in INPUT_PARAMS:
            if f"lr.{k}" in meta:
                meta[f"lr.{k}"].fill_(math.log(cfg.input_lr))
    meta = {k: v.requires_grad_(True) for k, v in meta.items()}
    bundle = ModelBundle(
        network=net,
        encoder=encoder,
        profile=profile,
        normaliser=_fit_normaliser(cfg, family, rng),
        task={
            "family": family.name,
            "config": family.config(),
            "kind": family.kind,
            "n_channels": family.n_channels,
            "length": family.length,
            "n_outputs": family.n_outputs,
        },
        meta={
            "algorithm": cfg.algorithm,
            "scope": cfg.scope,
            "inner_steps": cfg.deploy_inner_steps
            if cfg.deploy_inner_steps is not None
            else cfg.inner_steps,
            "inner_lr": cfg.inner_lr,
            "episode_normalisation": cfg.episode_normalisation,
            "refine_steps": cfg.refine_steps,
            "refine_lr": cfg.refine_lr,
        },
        # (scope "input": gains and offsets per input channel, folded into layer 0)
        meta_tensors=meta,
    )
    if cfg.body_init == "dense":
        init = init_from_dense(
            bundle,
            family,
            rng,
            cfg.body_init_steps,
            cfg.body_init_scale,
            cfg.seed,
            cfg.body_init_groups,
            cfg.body_init_per_group,
            cfg.body_init_units,
        )
        bundle.meta["body_init"] = dataclasses.asdict(init)
        if cfg.train_body:
            keep_converted(bundle, init.units)
    body = []
    for k, p in net.named_parameters():
        if cfg.train_body or k.startswith("readout."):
            body.append(p)
        else:
            p.requires_grad_(False)  # (no gradient to compute for a body kept as built)
    groups: list[dict[str, Any]] = [{"params": body}]
    if meta:
        # Learned inner rates may move faster than the weights (meta_lr).
        groups.append({"params": list(meta.values()), "lr": cfg.meta_lr or cfg.outer_lr})
    opt = torch.optim.Adam(groups, lr=cfg.outer_lr)
    return Trainer(cfg, family, bundle, opt, rng, 0, [])


def train_steps(
    tr: Trainer,
    n: int,
    progress: bool = True,
    ckpt_dir: Path | None = None,
    executor: Submitter | None = None,
) -> None:
    """Run ``n`` more meta-iterations (checkpointing into ``ckpt_dir`` if given); with an
    ``executor``, each meta-batch's tasks run on it (:mod:`regulator.meta.train_fanout`)."""
    bar = tqdm(range(n), disable=not progress, desc="meta-train", dynamic_ncols=True)
    for _ in bar:
        tr.optimiser.zero_grad()
        losses, metrics = [], []
        env_seeds: list[int] = []
        pretrain = tr.iteration < tr.cfg.pretrain_steps
        if pretrain:
            loss_j, m_j, env_seeds = joint_step(tr)
            losses.append(loss_j)
            metrics.append(m_j)
        elif executor is not None:
            from regulator.meta.train_fanout import fanout_meta_batch

            losses, metrics, env_seeds = fanout_meta_batch(tr, executor)
        for _ in range(0 if pretrain or executor is not None else tr.cfg.meta_batch):
            env_seed = int(tr.rng.integers(0, 2**31 - 1))
            env_seeds.append(env_seed)
            chip_seed = int(tr.rng.integers(0, 2**31 - 1))
            loss, m = task_step(tr, env_seed, chip_seed)
            (loss / tr.cfg.meta_batch).backward()
            losses.append(float(loss.detach()))
            metrics.append(m)
        torch.nn.utils.clip_grad_norm_(
            [p for g in tr.optimiser.param_groups for p in g["params"]], 5.0
        )
        tr.optimiser.step()
        tr.iteration += 1
        rec: dict[str, Any] = {
            "iteration": tr.iteration,
            "loss": float(np.mean(losses)),
            "metric": float(np.mean(metrics)),
            "env_seeds": env_seeds,  # so evaluation can revisit training environments
        }
        if pretrain:
            rec["phase"] = "pretrain"
        assert tr.history is not None
        tr.history.append(rec)
        name = "acc" if tr.bundle.kind == "classification" else "mae"
        bar.set_postfix(loss=f"{rec['loss']:.3f}", **{name: f"{rec['metric']:.3f}"})
        if ckpt_dir is not None and tr.iteration % tr.cfg.checkpoint_every == 0:
            save_checkpoint(tr, ckpt_dir)


def save_checkpoint(tr: Trainer, ckpt_dir: Path) -> None:
    """Network, meta-parameters, optimiser and RNG state, atomically (no pickles)."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"net.{k}": v.detach().contiguous() for k, v in tr.bundle.network.state_dict().items()
    }
    tensors.update(
        {f"meta.{k}": v.detach().contiguous() for k, v in tr.bundle.meta_tensors.items()}
    )
    opt_state = tr.optimiser.state_dict()
    for pid, st in opt_state["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"opt.{pid}.{key}"] = val.detach().contiguous().reshape(val.shape)
    tmp = ckpt_dir / "checkpoint.safetensors.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(ckpt_dir / "checkpoint.safetensors")
    atomic.write_json(
        ckpt_dir / "checkpoint.json",
        {
            "config": tr.cfg.model_dump(mode="json"),
            "iteration": tr.iteration,
            "rng": tr.rng.bit_generator.state,
            "history": tr.history,
            "normaliser": tr.bundle.normaliser.to_dict(),
        },
    )


def load_checkpoint(ckpt_dir: Path) -> Trainer:
    """Resume a run from its checkpoint folder."""
    info = json.loads((ckpt_dir / "checkpoint.json").read_text())
    cfg = TrainConfig.model_validate(info["config"])
    tr = build_trainer(cfg)
    tensors = load_file(str(ckpt_dir / "checkpoint.safetensors"))
    tr.bundle.network.load_state_dict(
        {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
    )
    with torch.no_grad():
        for k, v in tr.bundle.meta_tensors.items():
            v.copy_(tensors[f"meta.{k}"])
    opt_state = tr.optimiser.state_dict()
    for pid in [i for g in opt_state["param_groups"] for i in g["params"]]:
        st: dict[str, torch.Tensor] = {}
        for key in ("step", "exp_avg", "exp_avg_sq"):
            name = f"opt.{pid}.{key}"
            if name in tensors:
                st[key] = tensors[name]
        if st:
            opt_state["state"][pid] = st
    tr.optimiser.load_state_dict(opt_state)
    tr.bundle.normaliser = Normaliser.from_dict(info["normaliser"])
    tr.rng.bit_generator.state = info["rng"]
    tr.iteration = int(info["iteration"])
    tr.history = list(info["history"])
    return tr


CALIBRATION_SIZES = (20, 50, 100, 200, 500, 1000)
"""How many held-out scores a conformal calibration keeps. Drift detectors calibrate
their threshold on the exact p-value grid of that many scores, an expensive computation
cached per size: a few fixed sizes keep recalibrations from recomputing it."""


def calibration_size(n: int) -> int:
    """Calibration scores kept out of ``n`` samples: the largest of
    :data:`CALIBRATION_SIZES` not above ``n // 2`` (the rest fit the scorer).

    >>> calibration_size(2000), calibration_size(201), calibration_size(30)
    (1000, 100, 15)
    """
    fitting = [c for c in CALIBRATION_SIZES if c <= n // 2]
    return fitting[-1] if fitting else n // 2


def calibrate(
    bundle: ModelBundle, x: np.ndarray, seed: int = 0, scorer: str = "mahalanobis"
) -> dict[str, Any]:
    """The monitors' in-distribution statistics of ``bundle`` on samples ``x``.

    :func:`calibration_size` of ``x`` calibrate the OOD scorer's conformal p-values,
    the rest fit the scorer on hidden spike counts; the mean spike density per layer
    is the density baseline.
    """
    from regulator.meta.model import ChipModel
    from regulator.monitor.conformal import CalibratedScorer

    # Shuffle first: the fit and calibration halves must be exchangeable with each other
    # and with what is served, and callers may pass samples ordered by class or time.
    x = np.asarray(x)[np.random.default_rng(seed).permutation(len(x))]
    model = ChipModel(bundle, seed=seed)
    pred = model.predict(x)
    half = len(x) - calibration_size(len(x))
    cs = CalibratedScorer.fit(
        scorer,
        pred.hidden_counts[:half],
        pred.outputs[:half],
        cal_hidden=pred.hidden_counts[half:],
        cal_readout=pred.outputs[half:],
    )
    return {
        "ood": cs.to_dict(),
        "spike_density": list(pred.telemetry.spike_density()),
        "energy_per_inference_j": pred.energy_j / len(x),
        "n_samples": len(x),
    }


def finalise(tr: Trainer, n_calibration: int = 2000) -> ModelBundle:
    """The trained bundle with calibration statistics for its nominal environment."""
    b = tr.bundle
    rng = np.random.default_rng(tr.cfg.seed + 17)
    x, y = tr.family.sample(tr.family.nominal_environment(), n_calibration, rng)
    b.meta_tensors = {k: v.detach() for k, v in b.meta_tensors.items()}
    if tr.cfg.rehearsal:
        assert isinstance(tr.family, FileFamily)
        attach_source(b, tr.family.data.x, tr.family.data.y)
    if b.episode_normalisation or tr.cfg.algorithm == "prototype":
        # What is served before any recalibration: the nominal environment's
        # normalisation, and (prototype readout) its class means as the readout.
        b = _adapt_nominal(b, x, y, tr.cfg.seed)
    b.calibration = calibrate(b, x, seed=tr.cfg.seed)
    b.meta["train_config"] = tr.cfg.model_dump(mode="json")
    b.meta["iterations"] = tr.iteration
    seen = [
        int(s)
        for rec in (tr.history or [])
        if rec.get("phase") != "pretrain"
        for s in rec.get("env_seeds", [])
    ]
    b.meta["train_env_seeds"] = seen[-64:]  # the latest training environments
    tr.bundle = b
    return b


def _adapt_nominal(b: ModelBundle, x: np.ndarray, y: np.ndarray, seed: int) -> ModelBundle:
    """``b`` adapted on labelled nominal-environment samples (exact writes, no chip
    noise), the normaliser fitted on all of ``x``: the shipped model's starting point."""
    from regulator.meta.adapt import adapt

    ideal = ChipInstance.create("ideal", b.cfg, seed)
    new, _ = adapt(b, x, y, ideal, chip_writes=False)
    new.normaliser = b.support_normaliser(x) if b.episode_normalisation else new.normaliser
    return new


def train_prior(
    cfg: TrainConfig,
    out: Path,
    resume: bool = True,
    progress: bool = True,
    executor: Submitter | None = None,
) -> tuple[ModelBundle, Trainer]:
    """Meta-train (resuming from ``out/.checkpoint`` if present) and write the folder;
    ``executor`` runs each meta-batch's tasks (see :func:`train_steps`).

    The card is written by the caller (it holds the evaluation table).
    """
    ckpt = out.parent / f".{out.name}.checkpoint"
    if resume and (ckpt / "checkpoint.json").exists():
        tr = load_checkpoint(ckpt)
        if tr.cfg != cfg:
            raise ConfigError(f"checkpoint in {ckpt} was made with another configuration")
        log.info("resuming from iteration %d", tr.iteration)
    else:
        tr = build_trainer(cfg)
    total = cfg.pretrain_steps + cfg.iterations
    train_steps(tr, total - tr.iteration, progress=progress, ckpt_dir=ckpt, executor=executor)
    bundle = finalise(tr)
    return bundle, tr
