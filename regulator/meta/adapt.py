"""Few-shot adaptation from the prior: clone, adapt on the chip, count what it cost.

Used two ways: inside meta-training (differentiable, on float parameters with the
chip's quantisation as straight-through) and at deployment (:func:`adapt`), where the
final update is committed through the chip's write model (:mod:`regulator.meta.writes`)
and its writes and energy are counted. The serving bundle is never modified.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.func import functional_call

from regulator.chip.energy import EnergyModel
from regulator.chip.network import ChipInstance
from regulator.errors import AdaptationError, ConfigError, InputError
from regulator.meta.algorithms import Params, make_algorithm
from regulator.meta.inner import (
    INPUT_PARAMS,
    SCOPES,
    InputProblem,
    ReadoutProblem,
    adapt_input,
    adapt_readout,
    fold_input,
    input_start,
    masked_loss,
    metric,
    sample_errors,
    task_loss,
)
from regulator.meta.model import ModelBundle
from regulator.meta.proto import prototypes, readout_from_prototypes
from regulator.meta.readout import li_kernel, readout_features
from regulator.meta.rehearsal import has_rehearsal, rehearsal_readout
from regulator.meta.writes import commit_update

__all__ = [
    "INPUT_PARAMS",
    "SCOPES",
    "AdaptationReport",
    "InputProblem",
    "ReadoutProblem",
    "adapt",
    "adapt_input",
    "adapt_readout",
    "fold_input",
    "input_start",
    "masked_loss",
    "metric",
    "sample_errors",
    "task_loss",
]  # the inner loop's names re-exported: callers import them from here


@dataclass(frozen=True)
class AdaptationReport:
    """What one deployment adaptation did and cost.

    ``learning_energy_j`` counts the support forwards on the chip (``support_forwards``:
    one for the readout scope, one more per inner step for the ``input`` scope) plus
    every weight write (``weight_writes`` x the profile's synaptic-update energy).
    """

    algorithm: str
    scope: str
    n_support: int
    steps: int
    seconds: float
    weight_writes: int
    skipped_updates: int
    write_energy_j: float
    support_energy_j: float
    support_forwards: int = 1

    @property
    def learning_energy_j(self) -> float:
        return self.write_energy_j + self.support_energy_j

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["learning_energy_j"] = self.learning_energy_j
        return d


def _support_tensors(
    bundle: ModelBundle, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, torch.Tensor]:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    y_arr = np.asarray(y)
    if len(x) == 0 or len(x) != len(y_arr):
        raise InputError(
            f"support set needs as many labels as samples, got {len(x)} and {len(y_arr)}"
        )
    if bundle.kind == "classification":
        n_cls = bundle.cfg.n_outputs
        if y_arr.min() < 0 or y_arr.max() >= n_cls:
            raise InputError(f"labels must lie in 0..{n_cls - 1}")
        return x, torch.as_tensor(y_arr, dtype=torch.long)
    return x, torch.as_tensor(y_arr, dtype=torch.float32)


def adapt(
    bundle: ModelBundle,
    support_x: np.ndarray,
    support_y: np.ndarray,
    chip: ChipInstance,
    *,
    steps: int | None = None,
    event_threshold: float | None = None,
    chip_writes: bool = True,
) -> tuple[ModelBundle, AdaptationReport]:
    """A clone of ``bundle`` adapted on the support set, and what it cost.

    The update is computed with the bundle's meta-learned algorithm and committed
    through ``chip``'s write model (grid, stochastic rounding, memristive pulses) when
    ``chip_writes``. The caller reprograms the chip (drift restarts) if it swaps the
    clone in.
    """
    t0 = time.perf_counter()
    algo = make_algorithm(str(bundle.meta.get("algorithm", "metasgd")))
    scope = str(bundle.meta.get("scope", "readout"))
    if scope not in SCOPES:
        raise ConfigError(f"unknown adaptation scope {scope!r}; valid: {', '.join(SCOPES)}")
    n_steps = int(steps if steps is not None else bundle.meta.get("inner_steps", 10))
    if n_steps < 0:
        raise ConfigError("steps must be >= 0")
    x, y = _support_tensors(bundle, support_x, support_y)
    new = bundle.clone()
    if new.episode_normalisation:
        # As in episodic meta-training: the support set's inputs (never its labels)
        # set the normalisation of the new environment.
        new.normaliser = new.support_normaliser(x)
    meta = {k: v.detach() for k, v in new.meta_tensors.items()}
    if not meta:
        meta = algo.init_meta({}, float(bundle.meta.get("inner_lr", 0.5)))
    energy = EnergyModel(bundle.profile.energy)
    with torch.no_grad():
        inp = new.encode(x, chip.generator)
        out = new.network(inp, chip, input_is_spikes=new.encoder.spiking)
    support_j = energy.energy(out.telemetry).inference_j
    skipped = 0
    forwards = 1
    rescaled: set[str] = set()  # layers written anew (their grid set again)
    if algo.name == "prototype":
        if scope != "readout" or new.kind != "classification":
            raise ConfigError("the prototype readout needs scope 'readout' and classification")
        assert out.last_spikes is not None
        kernel = li_kernel(new.cfg, out.last_spikes.shape[0])
        phi = readout_features(out.last_spikes, kernel)
        if has_rehearsal(new):
            # The whole readout (and its skip synapses) refitted on the shots beside
            # the prior's source samples; it replaces prototypes and refinement.
            adapted, n_steps = rehearsal_readout(new, phi, inp, y, kernel)
            rescaled = set(adapted)
        else:
            adapted = readout_from_prototypes(prototypes(phi, y, meta), meta, kernel.sum())
        # Optional refinement: delta-rule steps on the support set from the written
        # prototypes, where the shots disagree with the prior (event-driven with a
        # threshold). ``refine_steps`` and ``refine_lr`` are chosen on simulated drift.
        if not rescaled:
            n_steps = int(steps if steps is not None else new.meta.get("refine_steps", 0))
        if not rescaled and n_steps > 0:
            problem = ReadoutProblem(new.network, chip, out, y, new.kind)
            rate = {"log_lr": torch.tensor(math.log(float(new.meta.get("refine_lr", 0.1))))}
            adapted, skipped = adapt_readout(
                make_algorithm("fomaml"), problem, adapted, rate, n_steps, False, event_threshold
            )
    elif scope == "readout":
        problem = ReadoutProblem(new.network, chip, out, y, new.kind)
        start = {
            "readout.weight": new.network.readout.weight.detach().clone(),
            "readout.bias": new.network.readout.bias.detach().clone(),
        }
        if algo.name == "metasgd" and not all(f"lr.{k}" in meta for k in start):
            raise AdaptationError("metasgd bundle lacks learned rates for the readout")
        adapted, skipped = adapt_readout(
            algo, problem, start, meta, n_steps, False, event_threshold
        )
    elif scope == "input":
        base = {k: v.detach().clone() for k, v in new.network.named_parameters()}
        iproblem = InputProblem(new.network, chip, inp, y, new.kind, new.encoder.spiking, base=base)
        start = input_start(new.network)
        if algo.name == "metasgd" and not all(f"lr.{k}" in meta for k in start):
            raise AdaptationError("metasgd bundle lacks learned rates for the input scope")
        adapted, skipped = adapt_input(algo, iproblem, start, meta, n_steps, False, event_threshold)
        # Each inner step ran the support set through the chip once more.
        forwards += iproblem.forwards
        adapted = {
            k: v
            for k, v in fold_input(base, adapted).items()
            if k.startswith(("layers.0.", "readout."))
        }
    else:
        if algo.name == "plasticity":
            raise ConfigError("the plasticity rule adapts the readout only (scope 'readout')")
        net = new.network
        start = {k: v.detach().clone() for k, v in net.named_parameters()}

        def loss_fn(p: Params) -> torch.Tensor:
            o = functional_call(net, p, (inp, chip), {"input_is_spikes": new.encoder.spiking})
            return task_loss(new.kind, o.outputs, y)

        adapted = algo.adapt(start, loss_fn, meta, n_steps)
    writes = 0
    with torch.no_grad():
        params = dict(new.network.named_parameters())
        gen = chip.generator
        for k, v in adapted.items():
            if chip_writes:
                res = commit_update(params[k], v, bundle.profile, gen, rescale=k in rescaled)
                params[k].copy_(res.weight)
                writes += res.writes
            else:
                writes += int((v != params[k]).sum())
                params[k].copy_(v)
    report = AdaptationReport(
        algorithm=algo.name,
        scope=scope,
        n_support=len(x),
        steps=n_steps,
        seconds=time.perf_counter() - t0,
        weight_writes=writes,
        skipped_updates=skipped,
        write_energy_j=energy.learning_energy_j(writes),
        support_energy_j=support_j * forwards,
        support_forwards=forwards,
    )
    return new, report
