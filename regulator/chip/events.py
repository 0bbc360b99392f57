"""Event accounting of one forward (:class:`EventTally`: synaptic events delivered and
dropped, active neurons, spikes per layer), the per-read weight noise, the fused path's
current-floor check, and the like-for-like dense network's MACs."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from regulator.chip.instance import ChipInstance

if TYPE_CHECKING:
    from regulator.chip.network import NetworkConfig

__all__ = ["EventTally", "currents_normal", "dense_macs", "read_noise"]


def read_noise(w: torch.Tensor, chip: ChipInstance) -> torch.Tensor:
    """``w`` plus this read's weight noise (a fresh draw from the chip's generator)."""
    p = chip.profile
    if p.noise_weight_sigma <= 0:
        return w
    top = w.detach().abs().max()
    noise = torch.randn(w.shape, generator=chip.generator) * (p.noise_weight_sigma * top)
    return w + noise


class EventTally:
    """Event counts of one forward, accumulated layer by layer (no gradient)."""

    def __init__(self) -> None:
        self.syn_ops = 0.0
        self.dropped = 0.0
        self.active = 0.0
        self.spikes_per_layer: list[float] = []
        self._counts: list[torch.Tensor] = []

    def synaptic_input(
        self,
        s: torch.Tensor,
        w: torch.Tensor,
        bias: torch.Tensor | None,
        spiking: bool,
        p_fail: float,
        chip: ChipInstance | None,
        binary: bool = False,
        count_active: bool = True,
    ) -> torch.Tensor:
        """Input currents ``[T, B, n_out]`` for inputs ``s``, its events counted.

        Events are counted as non-zero inputs times the non-zero fan-out. With a
        transmission failure probability, each (step, synapse) event is lost independently
        (the same draw is shared by the samples of a batch in that step). ``binary``: ``s``
        holds only 0 and 1 (hidden spikes), so it counts its own non-zero entries.
        """
        with torch.no_grad():
            nz = (w != 0).to(s.dtype)
            active_in = (s if binary else (s != 0).to(s.dtype)).sum(1)  # [T, n_in]
            attempted = float((active_in @ nz.sum(0)).sum())
        if spiking and p_fail > 0 and chip is not None:
            keep = (torch.rand((s.shape[0], *w.shape), generator=chip.generator) >= p_fail).to(
                s.dtype
            )
            cur = torch.einsum("tbj,tij->tbi", s, w * keep)
            with torch.no_grad():
                delivered = float((active_in * (keep * nz).sum(1)).sum())
            dropped = attempted - delivered
        else:
            cur = torch.matmul(s, w.t())
            dropped = 0.0
        if bias is not None:
            # In place without autograd: one [T, B, n_out] buffer instead of two.
            cur = cur.add_(bias) if not torch.is_grad_enabled() else cur + bias
        self.syn_ops += attempted - dropped
        self.dropped += dropped
        if count_active:  # (False for a second input to neurons already counted)
            with torch.no_grad():
                self.active += float(torch.count_nonzero(cur))
        return cur

    def layer_spikes(self, s: torch.Tensor, w_rec: torch.Tensor | None) -> None:
        """Spikes ``[T, B, n]`` of a hidden layer, and its recurrent events."""
        with torch.no_grad():
            c = s.sum(0)
            self._counts.append(c)
            self.spikes_per_layer.append(float(c.sum()))
            if w_rec is not None:
                fan = (w_rec != 0).sum(0).to(s.dtype)
                self.syn_ops += float((s[:-1].sum((0, 1)) * fan).sum())

    def counts(self) -> torch.Tensor:
        """Spikes per hidden neuron per sample ``[B, sum(hidden)]``."""
        return torch.cat(self._counts, dim=1).detach()


def _smallest_nonzero(x: torch.Tensor) -> float:
    """Smallest non-zero ``|x|`` (infinity when there is none)."""
    if x.numel() == 0:
        return math.inf
    a = x.detach().abs()
    return float(a.masked_fill_(a == 0, math.inf).amin())


def currents_normal(
    s: torch.Tensor, binary: bool, w: torch.Tensor, bias: torch.Tensor | None
) -> bool:
    """Whether no non-zero input current ``s @ w.T + bias`` can be smaller than
    ``dynamics.CURRENT_FLOOR``: every product of floats ``x`` and ``w`` is a multiple of
    about ``|x| |w| 2**-48``, so sums of them (and of the bias) are zero or at least
    that; ``2**-50`` for the smallest ``|x| |w|`` and ``2**-70`` for the bias keep them
    above ``2**-100``."""
    smallest_in = 1.0 if binary else _smallest_nonzero(s)
    if smallest_in * _smallest_nonzero(w) < 2.0**-50:
        return False
    return bias is None or _smallest_nonzero(bias) >= 2.0**-70


def dense_macs(x: torch.Tensor, weights: dict[str, torch.Tensor], cfg: NetworkConfig) -> int:
    """MACs per sample of the like-for-like dense ANN: an MLP of the same widths that sees
    every distinct input the chip was given (a static or held input once, a time series
    at each of its steps) and runs each recurrent layer once per input point."""
    with torch.no_grad():
        nz = x.abs().sum((1, 2)) > 0
        changed = torch.ones_like(nz)
        changed[1:] = (x[1:] != x[:-1]).any(dim=2).any(dim=1)
        points = max(int((nz & changed).sum()), 1)
    macs = 0
    for name, w in weights.items():
        per = w.numel()
        sees_input = name.startswith(("layers.0.", "recurrent.", "readout_skip."))
        macs += per * points if sees_input else per
    return macs
