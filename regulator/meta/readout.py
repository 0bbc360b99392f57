"""The leaky-integrator readout as a linear map, so readout adaptation needs one forward.

The readout's output (mean membrane over ``T`` steps) is linear in its input current,
so ``outputs = phi @ W.T + c * b`` where ``phi = sum_k g_k s_k`` filters the last
hidden layer's spikes ``s`` with the LI kernel ``g`` and ``c = sum_k g_k``. Adapting
only the readout (Ortner et al. 2025; ANIL) then costs one chip forward for the
support set and a few small matrix products per inner step.
"""

from __future__ import annotations

import torch

from regulator.chip.network import NetworkConfig


def li_kernel(cfg: NetworkConfig, n_steps: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``g [T]``: contribution of a unit input current at step k to the mean membrane.

    >>> cfg = NetworkConfig(n_inputs=1, n_outputs=1, n_steps=4)
    >>> g = li_kernel(cfg, 4)
    >>> bool(g[0] > g[-1] > 0)
    True
    """
    t = n_steps
    cur = torch.eye(t, dtype=dtype).unsqueeze(-1)  # [T(step), T(batch: impulse time), 1]
    a_mem = cfg.dt_s * torch.as_tensor(cfg.tau_mem_inv, dtype=dtype)
    neg_b = -cfg.dt_s * torch.as_tensor(cfg.tau_syn_inv, dtype=dtype)
    v = torch.zeros(t, 1, dtype=dtype)
    i = torch.zeros_like(v)
    v_sum = torch.zeros_like(v)
    for k in range(t):
        i = i + cur[k]
        v = v + a_mem * ((0.0 - v) + i)
        i = i + neg_b * i
        v_sum = v_sum + v
    return (v_sum / t).squeeze(-1)


def readout_features(last_spikes: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``phi [B, H]`` from the last hidden layer's spikes ``[T, B, H]``."""
    return torch.einsum("t,tbh->bh", kernel[: last_spikes.shape[0]], last_spikes)


def readout_outputs(
    phi: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, kernel: torch.Tensor
) -> torch.Tensor:
    """The readout's outputs ``[B, K]`` for features ``phi`` and readout parameters."""
    return phi @ weight.t() + kernel.sum() * bias
