"""The inner loop's pieces: the losses, the problems it solves (the readout alone, or an
input calibration stage folded into the first layer) and their steps, each with the
event-driven mask that skips samples already within the threshold. Differentiable, so
meta-training backpropagates through them; :func:`regulator.meta.adapt.adapt` runs the
same steps at deployment and commits the result through the chip's write model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from regulator.chip.network import ChipInstance, NetOutput, SpikingNetwork
from regulator.errors import ConfigError
from regulator.meta.algorithms import Algorithm, Params
from regulator.meta.plasticity import pre_trace, three_factor_update
from regulator.meta.readout import li_kernel, readout_features

__all__ = [
    "INPUT_PARAMS",
    "SCOPES",
    "InputProblem",
    "ReadoutProblem",
    "adapt_input",
    "adapt_readout",
    "fold_input",
    "input_start",
    "masked_loss",
    "metric",
    "sample_errors",
    "task_loss",
]

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
