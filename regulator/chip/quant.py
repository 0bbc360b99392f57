"""Weight and state quantisation: straight-through for training, exact for inference.

Weights use a symmetric grid of ``2**bits - 1`` levels per layer, ``-q..q`` times a
per-layer step (two levels, ``±step``, for one bit). Loihi scales each core's weights
by a shared exponent; a per-layer scale is the same idea. State (membrane, synaptic
current) uses a fixed grid over ``[-state_range, state_range]``.
"""

from __future__ import annotations

import torch


def weight_levels(bits: int) -> int:
    """Largest integer level q of a signed ``bits``-bit symmetric grid (levels -q..q).

    One bit is the exception: two levels, ``±1`` (no zero), see :func:`quantise_weight`.
    """
    return 2 ** (bits - 1) - 1 if bits > 1 else 1


def weight_step(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Grid step for a layer: its largest magnitude maps to the top level."""
    scale = w.detach().abs().max().clamp_min(1e-8)
    return scale / weight_levels(bits)


def quantise_weight(w: torch.Tensor, bits: int, ste: bool) -> torch.Tensor:
    """``w`` rounded to the layer's grid; with ``ste`` the gradient passes straight through.

    >>> w = torch.tensor([0.0, 0.26, -1.0, 0.74])
    >>> quantise_weight(w, 2, ste=False)  # levels -1, 0, 1 times max |w|
    tensor([ 0.,  0., -1.,  1.])
    """
    step = weight_step(w, bits)
    if bits == 1:
        # One bit holds two levels: the sign, times the layer's scale (binary weights).
        wq = torch.where(w >= 0, step, -step)
    else:
        q = weight_levels(bits)
        wq = torch.clamp(torch.round(w / step), -q, q) * step
    if ste:
        return w + (wq - w).detach()
    return wq


def quantise_state(x: torch.Tensor, bits: int, state_range: float, ste: bool) -> torch.Tensor:
    """``x`` clipped to ``±state_range`` and rounded to a ``bits``-bit grid."""
    step = state_range / (2 ** (bits - 1))
    xq = torch.clamp(torch.round(x / step) * step, -state_range, state_range)
    if ste:
        return x + (xq - x).detach()
    return xq


def stochastic_round(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Round up with probability equal to the fractional part (unbiased in expectation)."""
    floor = torch.floor(x)
    frac = x - floor
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return floor + (u < frac).to(x.dtype)
