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
import torch.nn.functional as F
from torch.func import functional_call

from regulator.chip.energy import EnergyModel
from regulator.chip.network import ChipInstance, NetOutput, SpikingNetwork
from regulator.errors import AdaptationError, ConfigError, InputError
from regulator.meta.algorithms import Algorithm, Params, make_algorithm
from regulator.meta.model import ModelBundle
from regulator.meta.plasticity import pre_trace, three_factor_update
from regulator.meta.proto import prototypes, readout_from_prototypes
from regulator.meta.readout import li_kernel, readout_features
from regulator.meta.rehearsal import has_rehearsal, rehearsal_readout
from regulator.meta.writes import commit_update

SCOPES = ("readout", "input", "all")
"""What the inner loop adapts.

- ``readout``: the readout's weights and biases (one chip forward, then cheap steps).
- ``input``: the readout plus an input calibration stage: a gain and an offset per
  input channel (``input.gain``, ``input.offset``), folded into the first layer on the
  chip (its weight columns scaled by the gain, its bias shifted by ``W @ offset``), so
  sensor gain and offset drift is undone where it enters. Gradients reach the input
  stage by backpropagation through time over the support forward (each inner step is
  one chip forward of the support set).
- ``all``: every network parameter.
"""

INPUT_PARAMS = ("input.gain", "input.offset")


def task_loss(
    kind: str, outputs: torch.Tensor, y: torch.Tensor, reduce: bool = True
) -> torch.Tensor:
    """Cross-entropy for classification, mean squared error for regression."""
    if kind == "classification":
        return F.cross_entropy(outputs, y.long(), reduction="mean" if reduce else "none")
    target = y.reshape(outputs.shape[0], -1).to(outputs.dtype)
    err = (outputs - target) ** 2
    return err.mean() if reduce else err.mean(1)


def sample_errors(kind: str, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample error that event-driven updates compare with their threshold.

    Classification: 1 - softmax probability of the true class; regression: |error|.
    """
    if kind == "classification":
        p = outputs.softmax(1).gather(1, y.long().view(-1, 1)).squeeze(1)
        return 1.0 - p
    return (outputs - y.reshape(outputs.shape[0], -1).to(outputs.dtype)).abs().mean(1)


def metric(kind: str, outputs: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy (classification) or mean absolute error (regression)."""
    if kind == "classification":
        return float((outputs.argmax(1) == y.long()).float().mean())
    return float((outputs - y.reshape(outputs.shape[0], -1)).abs().mean())


def input_start(network: SpikingNetwork) -> Params:
    """Start of the ``input`` scope's inner loop: identity input stage, current readout."""
    n_in = network.cfg.n_inputs
    w = network.readout.weight
    return {
        "input.gain": torch.ones(n_in, dtype=w.dtype),
        "input.offset": torch.zeros(n_in, dtype=w.dtype),
        "readout.weight": w.detach().clone(),
        "readout.bias": network.readout.bias.detach().clone(),
    }


def fold_input(base: dict[str, torch.Tensor], params: Params) -> dict[str, torch.Tensor]:
    """Network parameters with the input stage of ``params`` folded into layer 0.

    ``x' = gain * x + offset`` feeding ``W x' + b`` is ``(W diag(gain)) x + (b + W
    offset)``: the chip keeps its structure, only layer 0's weights and biases change.
    ``base`` holds the network's parameters (layer 0 at least); other entries of
    ``params`` (the readout) override ``base``'s.
    """
    w0, b0 = base["layers.0.weight"], base["layers.0.bias"]
    out = dict(base)
    out["layers.0.weight"] = w0 * params["input.gain"][None, :]
    out["layers.0.bias"] = b0 + w0 @ params["input.offset"]
    for k, v in params.items():
        if k not in INPUT_PARAMS:
            out[k] = v
    return out


def masked_loss(
    kind: str, outputs: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """The task loss, over the samples where ``mask`` is 1 (all without a mask)."""
    if mask is None:
        return task_loss(kind, outputs, y)
    per = task_loss(kind, outputs, y, reduce=False)
    return (per * mask).sum() / mask.sum().clamp_min(1.0)


class InputProblem:
    """The ``input`` scope's adaptation problem on one support set (pure in params).

    ``base`` are the body's parameters (tensors; gradients flow to them when meta-
    training differentiates the query loss). Each loss evaluation is a chip forward.
    """

    def __init__(
        self,
        network: SpikingNetwork,
        chip: ChipInstance | None,
        inp: torch.Tensor,
        y: torch.Tensor,
        kind: str,
        input_is_spikes: bool,
        base: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.network = network
        self.chip = chip
        self.inp = inp
        self.y = y
        self.kind = kind
        self.input_is_spikes = input_is_spikes
        self.base: dict[str, torch.Tensor] = (
            base if base is not None else dict(network.named_parameters())
        )
        self.forwards = 0

    def run(self, params: Params, inp: torch.Tensor | None = None) -> NetOutput:
        self.forwards += 1
        return functional_call(
            self.network,
            fold_input(self.base, params),
            (self.inp if inp is None else inp, self.chip),
            {"input_is_spikes": self.input_is_spikes},
        )

    def outputs(self, params: Params, inp: torch.Tensor | None = None) -> torch.Tensor:
        return self.run(params, inp).outputs

    def loss(self, params: Params, mask: torch.Tensor | None = None) -> torch.Tensor:
        return masked_loss(self.kind, self.outputs(params), self.y, mask)


def _event_mask(
    problem: InputProblem | ReadoutProblem, params: Params, threshold: float | None
) -> tuple[torch.Tensor | None, int]:
    """Event-driven updates: the samples whose error exceeds ``threshold`` (1.0 each,
    else 0.0), and how many are skipped; no mask when updates are not event-driven."""
    if threshold is None:
        return None, 0
    with torch.no_grad():
        err = sample_errors(problem.kind, problem.outputs(params), problem.y)
    mask = (err > threshold).to(torch.float32)
    return mask, int(problem.y.shape[0] - mask.sum())


def adapt_input(
    algo: Algorithm,
    problem: InputProblem,
    params: Params,
    meta: dict[str, torch.Tensor],
    steps: int,
    create_graph: bool,
    event_threshold: float | None = None,
) -> tuple[Params, int]:
    """Adapted input stage and readout, and the per-sample updates skipped (as
    :func:`adapt_readout`)."""
    if algo.name == "plasticity":
        raise ConfigError("the plasticity rule adapts the readout only (scope 'readout')")
    skipped = 0
    for _ in range(steps):
        mask, n_skipped = _event_mask(problem, params, event_threshold)
        skipped += n_skipped
        if mask is not None and mask.sum() == 0:
            continue

        def loss_fn(p: Params, m: torch.Tensor | None = mask) -> torch.Tensor:
            return problem.loss(p, m)

        params = algo.autograd_step(params, loss_fn, meta, create_graph)
    return params, skipped


class ReadoutProblem:
    """The readout's adaptation problem on one support set, as pure functions of params.

    Holds the readout features (one chip forward) so each inner step is cheap.
    """

    def __init__(
        self,
        network: SpikingNetwork,
        chip: ChipInstance | None,
        out: NetOutput,
        y: torch.Tensor,
        kind: str,
    ) -> None:
        assert out.last_spikes is not None
        self.network = network
        self.chip = chip
        self.kind = kind
        self.kernel = li_kernel(network.cfg, out.last_spikes.shape[0])
        self.spikes = out.last_spikes
        self.phi = readout_features(out.last_spikes, self.kernel)
        self.y = y

    def outputs(self, params: Params, phi: torch.Tensor | None = None) -> torch.Tensor:
        w = self.network.effective_weight("readout.weight", params["readout.weight"], self.chip)
        feats = self.phi if phi is None else phi
        return feats @ w.t() + self.kernel.sum() * params["readout.bias"]

    def loss(self, params: Params, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.outputs(params)
        if mask is None:
            return task_loss(self.kind, out, self.y)
        per = task_loss(self.kind, out, self.y, reduce=False)
        return (per * mask).sum() / mask.sum().clamp_min(1.0)


def adapt_readout(
    algo: Algorithm,
    problem: ReadoutProblem,
    params: Params,
    meta: dict[str, torch.Tensor],
    steps: int,
    create_graph: bool,
    event_threshold: float | None = None,
) -> tuple[Params, int]:
    """Adapted readout parameters and the number of per-sample updates skipped.

    With ``event_threshold``, a sample contributes to a step only while its error
    exceeds the threshold (updates on error events, Stewart et al. 2020).
    """
    skipped = 0
    for _ in range(steps):
        mask, n_skipped = _event_mask(problem, params, event_threshold)
        skipped += n_skipped
        if mask is not None and mask.sum() == 0:
            continue
        if algo.name == "plasticity":
            params = _plasticity_step(problem, params, meta, mask)
        else:

            def loss_fn(p: Params, m: torch.Tensor | None = mask) -> torch.Tensor:
                return problem.loss(p, m)

            params = algo.step(params, loss_fn, meta, create_graph)
    return params, skipped


def _plasticity_step(
    problem: ReadoutProblem,
    params: Params,
    meta: dict[str, torch.Tensor],
    mask: torch.Tensor | None,
) -> Params:
    decay = torch.sigmoid(meta["trace_logit"])
    pre = pre_trace(problem.spikes, decay)
    out = problem.outputs(params)
    if problem.kind == "classification":
        post = out.softmax(1)
        target = F.one_hot(problem.y.long(), out.shape[1]).to(out.dtype)
    else:
        post = out
        target = problem.y.reshape(out.shape[0], -1).to(out.dtype)
    modulator = target - post
    if mask is not None:
        modulator = modulator * mask[:, None]
    dw, db = three_factor_update(pre, post, modulator, meta)
    return {
        "readout.weight": params["readout.weight"] + dw,
        "readout.bias": params["readout.bias"] + db,
    }


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
