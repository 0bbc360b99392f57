"""The prototype readout: class means of the chip's readout features, written as weights.

The readout's output is ``phi @ W.T + c * b`` with ``phi`` the LI-filtered hidden spike
counts (:mod:`regulator.meta.readout`) and ``c`` the kernel's sum. Setting, per class k,

    ``W_k = 2 P_k / tau``  and  ``b_k = -|P_k|^2 / (tau * c)``

makes the output ``(|phi|^2 - |phi - P_k|^2) / tau``: a softmax over it is a
prototypical network's softmax over negative squared distances (``|phi|^2`` is common to
every class). ``P_k`` is the support set's mean of class k shrunk toward a meta-learned
prior mean ``P0_k`` with weight ``lambda`` (in samples): ``(n_k mean_k + lambda P0_k) /
(n_k + lambda)``, so one shot leans on the prior and ten shots mostly on the data, and a
class absent from the support keeps its prior. ``tau`` and ``lambda`` are meta-learned,
stored as ``proto.log_temp`` and ``proto.log_shrink`` (and ``P0`` as ``proto.prior``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from regulator.chip.network import ChipInstance, SpikingNetwork
from regulator.meta.readout import li_kernel, readout_features

PRIOR = "proto.prior"
LOG_SHRINK = "proto.log_shrink"
LOG_TEMP = "proto.log_temp"


def prototypes(phi: torch.Tensor, y: torch.Tensor, meta: dict[str, torch.Tensor]) -> torch.Tensor:
    """``P [K, H]``: per-class means of ``phi [n, H]`` shrunk toward the prior means.

    >>> meta = {PRIOR: torch.zeros(2, 1), LOG_SHRINK: torch.tensor(0.0),
    ...         LOG_TEMP: torch.tensor(0.0)}
    >>> prototypes(torch.tensor([[3.0], [5.0], [1.0]]), torch.tensor([0, 0, 1]), meta)
    tensor([[2.6667],
            [0.5000]])
    """
    prior = meta[PRIOR]
    onehot = F.one_hot(y.long(), prior.shape[0]).to(phi.dtype)
    n = onehot.sum(0)[:, None]
    lam = meta[LOG_SHRINK].exp()
    return (onehot.t() @ phi + lam * prior) / (n + lam)


def readout_from_prototypes(
    protos: torch.Tensor, meta: dict[str, torch.Tensor], kernel_sum: torch.Tensor | float
) -> dict[str, torch.Tensor]:
    """Readout weight and bias whose output ranks classes by distance to ``protos``."""
    tau = meta[LOG_TEMP].exp()
    return {
        "readout.weight": 2.0 * protos / tau,
        "readout.bias": -(protos**2).sum(1) / (tau * kernel_sum),
    }


def episode_logits(
    network: SpikingNetwork,
    chip: ChipInstance,
    support_spikes: torch.Tensor,
    support_y: torch.Tensor,
    query_spikes: torch.Tensor,
    meta: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Query outputs ``[nq, K]`` of the readout written from the support set, the readout
    weights applied as the chip applies them (quantised straight-through, mismatch).

    ``*_spikes`` are the last hidden layer's spikes ``[T, n, H]`` (differentiable).
    """
    kernel = li_kernel(network.cfg, support_spikes.shape[0], support_spikes.dtype)
    phi_s = readout_features(support_spikes, kernel)
    phi_q = readout_features(query_spikes, kernel)
    ro = readout_from_prototypes(prototypes(phi_s, support_y, meta), meta, kernel.sum())
    w = network.effective_weight("readout.weight", ro["readout.weight"], chip)
    return phi_q @ w.t() + kernel.sum() * ro["readout.bias"]
