"""Inner-loop adaptation rules, plug-ins by name.

Every algorithm maps (parameters, support loss) to adapted parameters in a few steps;
meta-training differentiates the query loss of the result (torch.func for the inner
gradients, ordinary autograd for the meta-gradient).

- ``maml``: gradient steps with a meta-learned scalar rate; second order.
- ``fomaml``: the same, first order (inner gradients treated as constants).
- ``metasgd``: a meta-learned rate per parameter entry, the learning rule itself learned
  (Li et al. 2017); first order in the gradients, exact in the rates.
- ``reptile``: plain SGD inside; the outer step moves the initialisation toward the
  adapted parameters (Nichol et al. 2018).
- ``prototype``: no inner gradient steps: the readout is written from the support set's
  class means of the readout features (filtered hidden spike counts), shrunk toward
  meta-learned prior means, at a meta-learned temperature; the body is meta-trained
  episodically for it (prototypical networks, Snell et al. 2017; weight imprinting,
  Qi et al. 2018). One chip forward of the support set and one write per readout weight;
  a chip with on-chip learning can run it (a running mean per class).
- ``plasticity``: a three-factor local rule, pre-synaptic trace x (modulator, post-
  synaptic activity) with meta-learned coefficients and trace time constant; no
  backpropagation through time, so a chip could run it (see :mod:`regulator.meta.plasticity`).
"""

from __future__ import annotations

import math
from abc import ABC
from collections.abc import Callable, Mapping
from typing import ClassVar

import torch
from torch.func import grad

from regulator.errors import UnknownNameError

Params = dict[str, torch.Tensor]
LossFn = Callable[[Params], torch.Tensor]


class Algorithm(ABC):
    """A way of adapting parameters from a support loss."""

    name: ClassVar[str]
    second_order: ClassVar[bool] = False

    def init_meta(
        self, params: Mapping[str, torch.Tensor], inner_lr: float
    ) -> dict[str, torch.Tensor]:
        """Meta-parameters this algorithm learns (raw, unconstrained), by name."""
        return {"log_lr": torch.tensor(math.log(inner_lr))}

    def rate(self, meta: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """The inner rate for parameter ``name``."""
        return meta["log_lr"].exp()

    def step(
        self, params: Params, loss_fn: LossFn, meta: dict[str, torch.Tensor], create_graph: bool
    ) -> Params:
        """One inner gradient step."""
        grads = grad(loss_fn)(params)
        if not (create_graph and self.second_order):
            grads = {k: g.detach() for k, g in grads.items()}
        return self.apply(params, grads, meta)

    def apply(
        self, params: Params, grads: Mapping[str, torch.Tensor], meta: dict[str, torch.Tensor]
    ) -> Params:
        """The step from ``params`` along ``grads`` at this algorithm's rates."""
        return {k: p - self.rate(meta, k) * grads[k] for k, p in params.items()}

    def autograd_step(
        self, params: Params, loss_fn: LossFn, meta: dict[str, torch.Tensor], create_graph: bool
    ) -> Params:
        """:meth:`step` with ``torch.autograd.grad`` for the inner gradient: the same
        update, faster through the network's surrogate spike function (custom autograd
        functions are slow under ``torch.func`` transforms)."""
        leaves = {
            k: p if p.requires_grad else p.detach().requires_grad_(True) for k, p in params.items()
        }
        with torch.enable_grad():
            loss = loss_fn(leaves)
            second = create_graph and self.second_order
            gs = torch.autograd.grad(loss, list(leaves.values()), create_graph=second)
        grads = {k: g if second else g.detach() for k, g in zip(leaves, gs, strict=True)}
        return self.apply(leaves if second else params, grads, meta)

    def adapt(
        self,
        params: Params,
        loss_fn: LossFn,
        meta: dict[str, torch.Tensor],
        steps: int,
        create_graph: bool = False,
    ) -> Params:
        """``steps`` inner steps from ``params`` (which are never modified)."""
        for _ in range(steps):
            params = self.step(params, loss_fn, meta, create_graph)
        return params


class MAML(Algorithm):
    """Second-order MAML (Finn et al. 2017) with a learned scalar inner rate."""

    name = "maml"
    second_order = True


class FOMAML(Algorithm):
    """First-order MAML: the query gradient at the adapted point is the meta-gradient."""

    name = "fomaml"


class MetaSGD(Algorithm):
    """Meta-SGD: every parameter entry has its own learned inner rate."""

    name = "metasgd"

    def init_meta(
        self, params: Mapping[str, torch.Tensor], inner_lr: float
    ) -> dict[str, torch.Tensor]:
        return {
            f"lr.{k}": torch.full_like(p.detach(), math.log(inner_lr)) for k, p in params.items()
        }

    def rate(self, meta: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        return meta[f"lr.{name}"].exp()


class Reptile(Algorithm):
    """Reptile: SGD inside; meta-training moves the start toward the adapted point."""

    name = "reptile"


class Plasticity(Algorithm):
    """Marker for the three-factor local rule; its update lives in meta.plasticity."""

    name = "plasticity"

    def init_meta(
        self, params: Mapping[str, torch.Tensor], inner_lr: float
    ) -> dict[str, torch.Tensor]:
        return {
            "log_lr": torch.tensor(math.log(inner_lr)),
            "coef_mod": torch.tensor(1.0),  # pre x modulator (error-driven, Hebbian-gated)
            "coef_hebb": torch.tensor(0.0),  # pre x post (Hebbian)
            "coef_bias": torch.tensor(1.0),  # modulator alone, to the bias
            "trace_logit": torch.tensor(2.0),  # pre-synaptic trace decay per step, sigmoid
        }


class Prototype(Algorithm):
    """Class means as the readout (see :mod:`regulator.meta.proto`)."""

    name = "prototype"

    def init_meta(
        self, params: Mapping[str, torch.Tensor], inner_lr: float
    ) -> dict[str, torch.Tensor]:
        w = params.get("readout.weight")
        if w is None:
            raise UnknownNameError("parameter", "readout.weight", params)
        return {
            "proto.prior": torch.zeros_like(w.detach()),
            "proto.log_shrink": torch.tensor(0.0),
            "proto.log_temp": torch.tensor(0.0),
        }


ALGORITHMS: dict[str, type[Algorithm]] = {
    a.name: a for a in (MAML, FOMAML, MetaSGD, Reptile, Plasticity, Prototype)
}


def make_algorithm(name: str) -> Algorithm:
    """The algorithm called ``name``; unknown names list the valid ones.

    >>> make_algorithm("metasgd").name
    'metasgd'
    >>> make_algorithm("sgd")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    regulator.errors.UnknownNameError: unknown adaptation algorithm 'sgd'; valid: ...
    """
    if name not in ALGORITHMS:
        raise UnknownNameError("adaptation algorithm", name, ALGORITHMS)
    return ALGORITHMS[name]()
