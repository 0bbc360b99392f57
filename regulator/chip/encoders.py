"""Encoders: sensor samples ``[B, C, L]`` to chip input ``[T, B, n_in]``.

``L`` sensor time points are mapped onto ``T`` simulation steps by nearest-index
resampling (a static feature vector, ``L == 1``, is held for all steps).

- ``current``: the value is injected as an input current every step (n_in = C).
- ``poisson``: ON/OFF spike trains whose per-step probability is ``|x| * rate``
  (n_in = 2C, positive and negative parts).
- ``binned``: the sample's time course is averaged into ``n_bins`` bins per channel and
  each (channel, bin) is its own input line, injected as a current for the first
  ``hold_steps`` steps (all steps when 0): the chip sees the whole response shape at
  once and its neurons rate-code it (n_in = C * n_bins). Fewer held steps mean fewer
  input events, hence less energy; a line within ``dead_zone`` of 0 sends nothing.
- ``delta``: send-on-delta coding, which needs no analogue-to-digital converter: an
  ON (OFF) spike whenever the signal has risen (fallen) by ``threshold`` since the
  last event, at most one spike per step per channel (n_in = 2C).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from regulator.errors import ConfigError, UnknownNameError


def resample_time(x: torch.Tensor, n_steps: int) -> torch.Tensor:
    """``[B, C, L]`` to ``[T, B, C]`` by nearest-index resampling along time."""
    length = x.shape[-1]
    if length == n_steps:
        idx = None
    else:
        idx = torch.div(torch.arange(n_steps) * length, n_steps, rounding_mode="floor")
    y = x if idx is None else x[..., idx]
    return y.permute(2, 0, 1)


class Encoder(ABC):
    """Turns normalised sensor values into chip input over time."""

    name: ClassVar[str]
    spiking: ClassVar[bool]

    @abstractmethod
    def n_inputs(self, n_channels: int) -> int:
        """Chip input lines needed for ``n_channels`` sensor channels."""

    @abstractmethod
    def encode(
        self, x: torch.Tensor, n_steps: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``[B, C, L]`` to ``[T, B, n_inputs(C)]``."""

    def config(self) -> dict[str, float | str]:
        """JSON-able description, enough for :func:`make_encoder`."""
        return {"name": self.name}


class CurrentEncoder(Encoder):
    """Direct current injection, scaled by ``gain``.

    >>> CurrentEncoder(gain=2.0).encode(torch.ones(1, 3, 1), n_steps=4).shape
    torch.Size([4, 1, 3])
    """

    name = "current"
    spiking = False

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = float(gain)

    def n_inputs(self, n_channels: int) -> int:
        return n_channels

    def encode(
        self, x: torch.Tensor, n_steps: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return resample_time(x, n_steps) * self.gain

    def config(self) -> dict[str, float | str]:
        return {"name": self.name, "gain": self.gain}


class BinnedEncoder(Encoder):
    """Time bins as input lines, held as currents for ``hold_steps`` steps.

    >>> x = torch.arange(8.0).reshape(1, 1, 8)
    >>> out = BinnedEncoder(n_bins=2, hold_steps=3).encode(x, n_steps=4)
    >>> out.shape, out[0, 0].tolist(), out[3, 0].tolist()
    (torch.Size([4, 1, 2]), [1.5, 5.5], [0.0, 0.0])
    """

    name = "binned"
    spiking = False

    def __init__(
        self, n_bins: int = 4, hold_steps: int = 0, gain: float = 1.0, dead_zone: float = 0.0
    ) -> None:
        if int(n_bins) < 1 or int(hold_steps) < 0:
            raise ConfigError(
                f"binned encoder needs n_bins >= 1, hold_steps >= 0, got {n_bins}, {hold_steps}"
            )
        self.n_bins = int(n_bins)
        self.hold_steps = int(hold_steps)
        self.gain = float(gain)
        if not 0.0 <= float(dead_zone) < 10.0:
            raise ConfigError(f"binned encoder needs 0 <= dead_zone < 10, got {dead_zone}")
        self.dead_zone = float(dead_zone)

    def n_inputs(self, n_channels: int) -> int:
        return n_channels * self.n_bins

    def encode(
        self, x: torch.Tensor, n_steps: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        b, c, _ = x.shape
        v = torch.nn.functional.adaptive_avg_pool1d(x, self.n_bins).reshape(b, c * self.n_bins)
        if self.dead_zone > 0:
            # A line whose value is within the dead zone sends nothing: no input events.
            v = torch.where(v.abs() > self.dead_zone, v, torch.zeros_like(v))
        out = (v * self.gain).unsqueeze(0).repeat(n_steps, 1, 1)
        if 0 < self.hold_steps < n_steps:
            out[self.hold_steps :] = 0.0
        return out

    def config(self) -> dict[str, float | str]:
        return {
            "name": self.name,
            "n_bins": self.n_bins,
            "hold_steps": self.hold_steps,
            "gain": self.gain,
            "dead_zone": self.dead_zone,
        }


class PoissonEncoder(Encoder):
    """Bernoulli spikes per step with probability ``min(|x| * rate, 1)``, ON/OFF split."""

    name = "poisson"
    spiking = True

    def __init__(self, rate: float = 0.5) -> None:
        if not 0 < rate <= 1:
            raise ConfigError(f"poisson rate must be in (0, 1], got {rate}")
        self.rate = float(rate)

    def n_inputs(self, n_channels: int) -> int:
        return 2 * n_channels

    def encode(
        self, x: torch.Tensor, n_steps: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        v = resample_time(x, n_steps)
        p = torch.cat([v.clamp_min(0), (-v).clamp_min(0)], dim=-1).mul(self.rate).clamp(0, 1)
        u = torch.rand(p.shape, generator=generator, dtype=p.dtype)
        return (u < p).to(p.dtype)

    def config(self) -> dict[str, float | str]:
        return {"name": self.name, "rate": self.rate}


class DeltaEncoder(Encoder):
    """Send-on-delta: ON/OFF events when the signal moves by ``threshold``.

    >>> x = torch.tensor([[[0.0, 0.5, 1.0, 1.0]]])
    >>> DeltaEncoder(threshold=0.4).encode(x, n_steps=4)[:, 0, 0].tolist()  # ON line
    [0.0, 1.0, 1.0, 0.0]
    """

    name = "delta"
    spiking = True

    def __init__(self, threshold: float = 0.25) -> None:
        if threshold <= 0:
            raise ConfigError(f"delta threshold must be > 0, got {threshold}")
        self.threshold = float(threshold)

    def n_inputs(self, n_channels: int) -> int:
        return 2 * n_channels

    def encode(
        self, x: torch.Tensor, n_steps: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        v = resample_time(x, n_steps)
        ref = torch.zeros_like(v[0])
        out = torch.zeros((*v.shape[:2], 2 * v.shape[2]), dtype=v.dtype)
        c = v.shape[2]
        for t in range(v.shape[0]):
            diff = v[t] - ref
            on = diff >= self.threshold
            off = diff <= -self.threshold
            out[t, :, :c] = on.to(v.dtype)
            out[t, :, c:] = off.to(v.dtype)
            ref = ref + self.threshold * (on.to(v.dtype) - off.to(v.dtype))
        return out

    def config(self) -> dict[str, float | str]:
        return {"name": self.name, "threshold": self.threshold}


ENCODERS: dict[str, type[Encoder]] = {
    e.name: e for e in (CurrentEncoder, BinnedEncoder, PoissonEncoder, DeltaEncoder)
}


def make_encoder(name: str, **config: float) -> Encoder:
    """An encoder by name; unknown names list the valid ones."""
    if name not in ENCODERS:
        raise UnknownNameError("encoder", name, ENCODERS)
    try:
        return ENCODERS[name](**config)
    except TypeError as err:
        raise ConfigError(f"bad configuration for encoder {name!r}: {err}") from None
