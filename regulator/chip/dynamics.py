"""Inference-time neuron dynamics over a whole sequence: Norse's Euler updates, fused.

Under ``torch.no_grad`` a forward needs no autograd graph, so a layer's time loop can
update preallocated state in place and write spikes straight into one ``[T, B, n]``
buffer. Each update is the same IEEE operation, in the same order, as
``norse.torch.functional.lif.lif_feed_forward_step`` (and the reference loop in
:mod:`regulator.chip.network`), so the spikes are bit-identical; only Python and
allocation overhead go. The leaky-integrator readout is linear and time-invariant, so
its mean membrane over the sequence is one weighted sum over time (:func:`li_mean`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LIFParams:
    """Constants of one LIF layer as the chip runs it.

    ``a_mem`` = dt x tau_mem_inv and ``neg_b_syn`` = -dt x tau_syn_inv, each already
    rounded to the state's dtype (Norse multiplies by these products). ``v_th``:
    threshold, scalar or per neuron ``[n]``, in units of the network's v_th. With
    ``state_bits``, membrane and current are rounded to a ``state_bits``-bit grid over
    ``±state_range`` after each update (:func:`regulator.chip.quant.quantise_state`).

    >>> LIFParams(a_mem=0.1, neg_b_syn=-0.2, v_th=1.0, state_bits=24, state_range=64.0)
    LIFParams(a_mem=0.1, neg_b_syn=-0.2, v_th=1.0, state_bits=24, state_range=64.0)
    """

    a_mem: float
    neg_b_syn: float
    v_th: torch.Tensor | float
    state_bits: int | None = None
    state_range: float = 1.0


@dataclass(frozen=True)
class LIFState:
    """Membrane ``v`` and synaptic current ``i``, each ``[B, n]``.

    >>> s = LIFState(v=torch.zeros(2, 3), i=torch.ones(2, 3))
    >>> tuple(s.v.shape), float(s.i.sum())
    ((2, 3), 6.0)
    """

    v: torch.Tensor
    i: torch.Tensor


def lif_sequence_(
    cur: torch.Tensor,
    p: LIFParams,
    w_rec: torch.Tensor | None = None,
    noise_sigma: float = 0.0,
    generator: torch.Generator | None = None,
    currents_normal: bool = False,
) -> tuple[torch.Tensor, LIFState]:
    """Spikes (0/1) of a LIF layer driven by input currents ``cur`` ``[T, B, n]``,
    written over ``cur`` (each step's current is read before its spikes are stored,
    so one buffer serves both and no other of that size is allocated).

    Starts at rest (``v = i = 0``). ``w_rec`` ``[n, n]``: recurrent weights, the previous
    step's spikes adding ``z @ w_rec.T`` to the input. ``noise_sigma``: membrane noise,
    one ``randn((B, n), generator=generator)`` per step, added after the Euler update.
    No gradient (hard threshold). Returns ``cur`` and the final state.

    ``currents_normal``: the caller knows that no non-zero current is below
    ``CURRENT_FLOOR`` in magnitude. Then a quantised layer whose grid step is a power of
    two runs in units of the step (:func:`grid_scale`), two operations fewer per state
    update, with the same result.

    >>> cur = torch.tensor([[[0.0]], [[12.0]], [[0.0]], [[0.0]]])  # one pulse at step 1
    >>> z, s = lif_sequence_(cur, LIFParams(a_mem=0.1, neg_b_syn=-0.2, v_th=1.0))
    >>> z.flatten().tolist(), round(float(s.i), 3)  # the current decays, v charges again
    ([0.0, 1.0, 0.0, 1.0], 6.144)
    """
    t_steps, batch, n = cur.shape
    scale = grid_scale(p, noise_sigma) if currents_normal and w_rec is None else None
    if scale is not None:
        lo, hi = torch.aminmax(cur)
        if max(-float(lo), float(hi)) * scale > 2.0**60:
            scale = None
    v_th, sigma, levels = p.v_th, noise_sigma, 0.0
    if scale is not None:
        cur.mul_(scale)
        v_th = p.v_th * scale
        sigma = noise_sigma * scale
        levels = p.state_range * scale  # 2 ** (state_bits - 1)
    v = cur.new_zeros(batch, n)
    i = cur.new_zeros(batch, n)
    tmp = torch.empty_like(v)
    z = torch.zeros_like(v) if w_rec is not None else None
    noise = torch.empty(batch, n) if noise_sigma > 0 else None  # default dtype, as randn
    bits = p.state_bits
    q_step = p.state_range / (2 ** (bits - 1)) if bits is not None else 1.0
    for t in range(t_steps):
        keep = cur[t]  # the step's input current now, its 1 - z once the step is done
        if z is not None and w_rec is not None:
            torch.add(keep, z @ w_rec.t(), out=tmp)
            i.add_(tmp)
        else:
            i.add_(keep)
        # v + a_mem * ((v_leak - v) + i), with v_leak = 0: (0 - v) + i is i - v exactly.
        torch.sub(i, v, out=tmp)
        tmp.mul_(p.a_mem)
        v.add_(tmp)
        torch.mul(i, p.neg_b_syn, out=tmp)
        i.add_(tmp)
        if noise is not None:
            torch.randn((batch, n), generator=generator, out=noise)
            v.add_(noise.mul_(sigma))
        if scale is not None:
            v.round_().clamp_(-levels, levels)
            i.round_().clamp_(-levels, levels)
        elif bits is not None:
            _quantise_(v, q_step, p.state_range, tmp)
            _quantise_(i, q_step, p.state_range, tmp)
        # z = (v - v_th > 0) and v = (1 - z) v: v <= v_th keeps v, a spike resets it to 0.
        torch.le(v, v_th, out=keep)
        v.mul_(keep)
        if z is not None:
            torch.sub(1.0, keep, out=z)
    if scale is not None:
        v.div_(scale)
        i.div_(scale)
    return cur.neg_().add_(1.0), LIFState(v, i)


CURRENT_FLOOR = 2.0**-100
"""Below this, a non-zero current could make the reference's update round in the
subnormal range, where a power-of-two scaling no longer commutes with rounding."""


def grid_scale(p: LIFParams, noise_sigma: float = 0.0) -> float | None:
    """``1 / step`` of the layer's state grid where running in units of the step is exact.

    Multiplying every value by a power of two changes no IEEE rounding outside the
    subnormal range, and turns ``x / step`` into a whole number of steps: so when the
    step is a power of two, the layer's update in units of the step is the reference's,
    exactly scaled. The per-step factors and the noise must keep products clear of the
    subnormal range (with currents of at least ``CURRENT_FLOOR``); otherwise ``None``.

    >>> grid_scale(LIFParams(0.1, -0.2, 1.0, state_bits=24, state_range=64.0))  # 2**17
    131072.0
    >>> grid_scale(LIFParams(0.1, -0.2, 1.0, state_bits=12, state_range=5.0)) is None
    True
    """
    if p.state_bits is None:
        return None
    step = p.state_range / 2 ** (p.state_bits - 1)
    if math.frexp(step)[0] != 0.5 or not 2.0**-60 <= step <= 2.0**60:
        return None
    factors = (abs(p.a_mem), abs(p.neg_b_syn), noise_sigma or 1.0)
    if not all(2.0**-20 <= f <= 2.0**20 for f in factors):
        return None
    return 1.0 / step


def _quantise_(x: torch.Tensor, step: float, state_range: float, tmp: torch.Tensor) -> None:
    """``x`` in place := clamp(round(x / step) * step, ±state_range), as quantise_state."""
    torch.div(x, step, out=tmp)
    tmp.round_()
    tmp.mul_(step)
    torch.clamp(tmp, -state_range, state_range, out=x)


@functools.lru_cache(maxsize=64)
def li_kernel(n_steps: int, a_mem: float, neg_b_syn: float, dtype: torch.dtype) -> torch.Tensor:
    """``g [T]``: weight of the input current at step k in the LI mean membrane over T.

    Cached per arguments: the same (read-only) tensor is returned for the same call.

    >>> g = li_kernel(4, 0.1, -0.2, torch.float64)
    >>> bool(g[0] > g[-1] > 0), round(float(g[-1]), 6)  # last input: 0.1 / 4
    (True, 0.025)
    """
    # Impulse response of the LI Euler update (unit current jump at step 0) in float64;
    # an input at step k adds response j to the membrane at step k + j, so its weight in
    # the mean over T steps is the sum of the first T - k responses, over T.
    v = i = 0.0
    total, partial = 0.0, []
    for k in range(n_steps):
        i = i + (1.0 if k == 0 else 0.0)
        v = v + a_mem * (i - v)
        i = i + neg_b_syn * i
        total += v
        partial.append(total / n_steps)
    return torch.tensor(partial[::-1], dtype=dtype)


def li_mean(cur: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Mean over time of a leaky integrator's membrane, ``[B, n]``, for currents
    ``cur [T, B, n]`` (starting at rest): the same value as stepping
    ``li_feed_forward_step`` and averaging, up to float rounding."""
    return torch.einsum("t,tbn->bn", kernel, cur)
