"""Weight writes as the chip performs them: on the grid, stochastically rounded, counted.

A learning update computed in float is committed through the profile: a digital chip
stores the nearest grid level above or below with probability given by the distance
(stochastic rounding keeps small updates unbiased); a memristive chip applies
potentiation and depression pulses of unequal, state-dependent size with write noise.
Every changed synapse is a write, and writes cost ``synaptic_update_j`` each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from regulator.chip.profiles import ChipProfile
from regulator.chip.quant import stochastic_round, weight_levels


@dataclass(frozen=True)
class WriteResult:
    """The stored weights after a write, and how many synapse writes (pulses) it took."""

    weight: torch.Tensor
    writes: int


def commit_update(
    old: torch.Tensor,
    new: torch.Tensor,
    profile: ChipProfile,
    generator: torch.Generator | None = None,
    rescale: bool = False,
) -> WriteResult:
    """Store ``new`` in place of ``old`` the way ``profile``'s synapses can.

    The grid is the one of ``old`` (the layer's scale is fixed when it was programmed);
    values beyond its range saturate at the top level. With ``rescale`` (a whole layer
    written anew, its scale set again as when it was first programmed; always so for a
    layer that holds only zeros) the grid is ``new``'s.

    >>> from regulator.chip.profiles import ChipProfile
    >>> p = ChipProfile(name="d", weight_bits=3)  # levels -3..3
    >>> r = commit_update(torch.tensor([[0.0, 3.0]]), torch.tensor([[1.0, 9.0]]), p)
    >>> r.weight.tolist(), r.writes
    ([[1.0, 3.0]], 1)
    """
    old = old.detach()
    new = new.detach()
    if profile.weight_bits is None or old.dim() < 2:
        # Float weights, or biases (held at full precision, as Loihi's bias mantissa
        # and exponent): the new value is stored as computed.
        return WriteResult(new.clone(), int((new != old).sum()))
    q = weight_levels(profile.weight_bits)
    # Re-programming the layer's scale reads the old levels on the new grid.
    scale_of = new if rescale or not bool(old.any()) else old
    step = scale_of.abs().max().clamp_min(1e-8) / q
    old_lv = torch.clamp(torch.round(old / step), -q, q)
    target = torch.clamp(new / step, -q, q)
    mem = profile.memristive
    if mem is None:
        new_lv = torch.clamp(stochastic_round(target, generator), -q, q)
        writes = int((new_lv != old_lv).sum())
        return WriteResult(new_lv * step, writes)
    # Memristive: whole pulses; an up-pulse moves step_up levels, a down-pulse step_down,
    # each shrinking near the bound (nonlinearity); write noise in levels.
    delta = target - old_lv
    up = delta > 0
    step_size = torch.where(
        up, torch.full_like(delta, mem.step_up), torch.full_like(delta, mem.step_down)
    )
    headroom = torch.where(up, (q - old_lv) / (2 * q), (old_lv + q) / (2 * q))
    step_size = step_size * (1.0 - mem.nonlinearity * (1.0 - headroom)).clamp_min(0.05)
    pulses = stochastic_round(delta.abs() / step_size, generator)
    moved = torch.sign(delta) * pulses * step_size
    noise = torch.randn(delta.shape, generator=generator) * mem.write_noise * (pulses > 0)
    new_lv = torch.clamp(old_lv + moved + noise, -q, q)
    # The device settles on one of its levels: the stored weight stays on the grid.
    new_lv = torch.clamp(torch.round(new_lv), -q, q)
    return WriteResult(new_lv * step, int(pulses.sum()))
