"""One meta-training step's tasks: an episode drawn from the family on a fresh chip,
the inner adaptation (prototypes, the input stage, or every parameter) and the query
loss to differentiate (:func:`task_step`); and the body's joint pretraining step on
pooled environments (:func:`joint_step`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from regulator.chip.network import ChipInstance, NetOutput
from regulator.meta.algorithms import make_algorithm
from regulator.meta.inner import (
    InputProblem,
    ReadoutProblem,
    adapt_input,
    adapt_readout,
    input_start,
    metric,
    task_loss,
)
from regulator.meta.model import ModelBundle
from regulator.meta.proto import episode_logits
from regulator.meta.trainer import Trainer
from regulator.tasks.normalisation import Normaliser


def task_step(tr: Trainer, env_seed: int, chip_seed: int) -> tuple[torch.Tensor, float]:
    """Query loss after inner adaptation on one task (differentiable), and its metric."""
    cfg, fam, b = tr.cfg, tr.family, tr.bundle
    env = fam.environment_from_seed(env_seed)
    chip = ChipInstance.create(b.profile, b.cfg, chip_seed)
    k = int(tr.rng.choice(cfg.k_shots)) if cfg.k_shots else cfg.k_shot
    ep = fam.episode(env, k, cfg.n_query, tr.rng)
    if cfg.algorithm == "prototype":
        return _proto_task_step(tr, ep, chip)
    if cfg.scope == "input":
        return _input_task_step(tr, ep, chip)
    if cfg.scope == "all":
        return _all_task_step(tr, ep, chip)
    x = np.concatenate([ep.support_x, ep.query_x])
    ns = len(ep.support_x)
    inp = b.encode(x, chip.generator)
    out = b.network(inp, chip, input_is_spikes=b.encoder.spiking)
    assert out.last_spikes is not None
    ys = torch.as_tensor(ep.support_y)
    yq = torch.as_tensor(ep.query_y)
    sup = NetOutput(
        out.outputs[:ns], out.hidden_counts[:ns], out.telemetry, out.last_spikes[:, :ns]
    )
    problem = ReadoutProblem(b.network, chip, sup, ys, b.kind)
    start = {"readout.weight": b.network.readout.weight, "readout.bias": b.network.readout.bias}
    algo = make_algorithm(cfg.algorithm)
    if algo.name == "reptile":
        # Reptile: adapt on support and query together, first order; the outer step on
        # the readout pulls its start toward the adapted point, and the body learns from
        # the query loss at the adapted readout.
        adapted, _ = adapt_readout(
            algo, problem, start, tr.bundle.meta_tensors, cfg.inner_steps, False
        )
        q_phi = problem.phi.new_tensor(0)
        q_out = problem.outputs(
            {k: v.detach() for k, v in adapted.items()},
            _query_phi(problem, out.last_spikes[:, ns:]),
        )
        loss = task_loss(b.kind, q_out, yq)
        for name, param in start.items():
            delta = (param - adapted[name]).detach()
            param.grad = delta if param.grad is None else param.grad + delta
        del q_phi
    else:
        adapted, _ = adapt_readout(
            algo, problem, start, tr.bundle.meta_tensors, cfg.inner_steps, True
        )
        q_out = problem.outputs(adapted, _query_phi(problem, out.last_spikes[:, ns:]))
        loss = task_loss(b.kind, q_out, yq)
    return loss, metric(b.kind, q_out.detach(), yq)


def _episode_normaliser(b: ModelBundle, support_x: np.ndarray) -> Normaliser | None:
    """The support set's own normaliser under episodic normalisation, else None."""
    return b.support_normaliser(support_x) if b.episode_normalisation else None


def _proto_task_step(tr: Trainer, ep: Any, chip: ChipInstance) -> tuple[torch.Tensor, float]:
    """Query loss of the readout written from the support set's prototypes (one chip
    forward of support and query together, differentiable in the body and the prior)."""
    b = tr.bundle
    norm = _episode_normaliser(b, ep.support_x)
    x = np.concatenate([ep.support_x, ep.query_x])
    ns = len(ep.support_x)
    out = b.network(
        b.encode(x, chip.generator, normaliser=norm), chip, input_is_spikes=b.encoder.spiking
    )
    assert out.last_spikes is not None
    yq = torch.as_tensor(ep.query_y)
    q_out = episode_logits(
        b.network,
        chip,
        out.last_spikes[:, :ns],
        torch.as_tensor(ep.support_y),
        out.last_spikes[:, ns:],
        b.meta_tensors,
    )
    return task_loss(b.kind, q_out, yq), metric(b.kind, q_out.detach(), yq)


def _input_task_step(tr: Trainer, ep: Any, chip: ChipInstance) -> tuple[torch.Tensor, float]:
    """Query loss after adapting the input stage and the readout (BPTT over the support
    forward inside; first order in the inner gradients, exact in the rates)."""
    cfg, b = tr.cfg, tr.bundle
    algo = make_algorithm(cfg.algorithm)
    spiking = b.encoder.spiking
    inp_s = b.encode(ep.support_x, chip.generator)
    inp_q = b.encode(ep.query_x, chip.generator)
    ys = torch.as_tensor(ep.support_y)
    yq = torch.as_tensor(ep.query_y)
    problem = InputProblem(b.network, chip, inp_s, ys, b.kind, spiking)
    start = input_start(b.network)
    start["readout.weight"] = b.network.readout.weight
    start["readout.bias"] = b.network.readout.bias
    adapted, _ = adapt_input(algo, problem, start, b.meta_tensors, cfg.inner_steps, True)
    q_out = problem.outputs(adapted, inp_q)
    return task_loss(b.kind, q_out, yq), metric(b.kind, q_out.detach(), yq)


def _all_task_step(tr: Trainer, ep: Any, chip: ChipInstance) -> tuple[torch.Tensor, float]:
    """Query loss after adapting every parameter: the inner loop backpropagates through
    time over the support forward (``torch.func.grad`` over ``functional_call``); MAML
    differentiates through the inner gradients, the others are first order in them.
    Reptile pulls the start toward the adapted point instead."""
    from torch.func import functional_call

    cfg, b = tr.cfg, tr.bundle
    algo = make_algorithm(cfg.algorithm)
    net = b.network
    spiking = b.encoder.spiking
    inp_s = b.encode(ep.support_x, chip.generator)
    inp_q = b.encode(ep.query_x, chip.generator)
    ys = torch.as_tensor(ep.support_y)
    yq = torch.as_tensor(ep.query_y)

    def loss_on(
        params: dict[str, torch.Tensor], inp: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        out = functional_call(net, params, (inp, chip), {"input_is_spikes": spiking})
        return task_loss(b.kind, out.outputs, y)

    start: dict[str, torch.Tensor] = dict(net.named_parameters())
    if algo.name == "reptile":
        both = torch.cat([inp_s, inp_q], dim=1)
        y_both = torch.cat([ys, yq])
        detached = {k: v.detach() for k, v in start.items()}
        adapted = algo.adapt(
            detached, lambda p: loss_on(p, both, y_both), b.meta_tensors, cfg.inner_steps
        )
        for name, param in start.items():
            delta = (param - adapted[name]).detach()
            param.grad = delta if param.grad is None else param.grad + delta
        with torch.no_grad():
            q_out = functional_call(net, adapted, (inp_q, chip), {"input_is_spikes": spiking})
        return task_loss(b.kind, q_out.outputs, yq).detach().requires_grad_(), metric(
            b.kind, q_out.outputs, yq
        )
    adapted = algo.adapt(
        start, lambda p: loss_on(p, inp_s, ys), b.meta_tensors, cfg.inner_steps, create_graph=True
    )
    q = functional_call(net, adapted, (inp_q, chip), {"input_is_spikes": spiking})
    return task_loss(b.kind, q.outputs, yq), metric(b.kind, q.outputs.detach(), yq)


def joint_step(tr: Trainer) -> tuple[float, float, list[int]]:
    """One plain supervised step on samples pooled from several training environments
    (the body's pretraining before meta-training)."""
    cfg, fam, b = tr.cfg, tr.family, tr.bundle
    groups = cfg.pretrain_groups
    per = max(1, (cfg.meta_batch * (cfg.k_shot * fam.n_outputs + cfg.n_query)) // groups)
    losses, metrics, seeds = [], [], []
    for _ in range(groups):
        env_seed = int(tr.rng.integers(0, 2**31 - 1))
        seeds.append(env_seed)
        chip = ChipInstance.create(b.profile, b.cfg, int(tr.rng.integers(0, 2**31 - 1)))
        x, y = fam.sample(fam.environment_from_seed(env_seed), per, tr.rng)
        norm = _episode_normaliser(b, x)
        out = b.network(
            b.encode(x, chip.generator, normaliser=norm), chip, input_is_spikes=b.encoder.spiking
        )
        yt = torch.as_tensor(y)
        loss = task_loss(b.kind, out.outputs, yt)
        (loss / groups).backward()
        losses.append(float(loss.detach()))
        metrics.append(metric(b.kind, out.outputs.detach(), yt))
    return float(np.mean(losses)), float(np.mean(metrics)), seeds


def _query_phi(problem: ReadoutProblem, spikes: torch.Tensor) -> torch.Tensor:
    from regulator.meta.readout import readout_features

    return readout_features(spikes, problem.kernel)
