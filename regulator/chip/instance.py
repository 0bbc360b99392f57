"""One physical chip (:class:`ChipInstance`): the profile plus what is fixed when the
chip is made (mismatch, stuck devices, drift exponents), seeded, and its age since the
weights were last programmed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from regulator.chip.profiles import ChipProfile, load_profile

if TYPE_CHECKING:
    from regulator.chip.network import NetworkConfig

__all__ = ["ChipInstance", "weight_shapes"]


@dataclass
class ChipInstance:
    """One physical chip: the profile plus what is fixed when the chip is made.

    The same profile and seed give the same chip (same mismatch, same stuck devices,
    same drift exponents). ``age_s`` is the time since the weights were last
    programmed, which drives conductance drift. ``generator`` draws the per-read noise.
    """

    profile: ChipProfile
    seed: int
    weight_gain: dict[str, torch.Tensor]
    stuck_zero: dict[str, torch.Tensor]
    stuck_max: dict[str, torch.Tensor]
    drift_nu: dict[str, torch.Tensor]
    threshold_scale: list[torch.Tensor]
    generator: torch.Generator = field(repr=False)
    age_s: float = 0.0

    @classmethod
    def create(cls, profile: ChipProfile | str, cfg: NetworkConfig, seed: int = 0) -> ChipInstance:
        """Sample a chip of ``profile`` for a network of shape ``cfg``."""
        prof = load_profile(profile)
        g = torch.Generator().manual_seed(int(seed))
        shapes = weight_shapes(cfg)
        gain, zero, high, nu = {}, {}, {}, {}

        def draw(name: str, shape: tuple[int, int]) -> None:
            gain[name] = torch.exp(torch.randn(shape, generator=g) * prof.mismatch_weight_sigma)
            u = torch.rand(shape, generator=g)
            zero[name] = u < prof.stuck_at_zero_fraction
            high[name] = (u >= prof.stuck_at_zero_fraction) & (
                u < prof.stuck_at_zero_fraction + prof.stuck_at_max_fraction
            )
            nu[name] = prof.drift_nu * torch.exp(0.2 * torch.randn(shape, generator=g))

        skip = shapes.pop("readout_skip.weight", None)
        for name, shape in shapes.items():
            draw(name, shape)
        th = [1.0 + prof.mismatch_threshold_sigma * torch.randn(n, generator=g) for n in cfg.hidden]
        if skip is not None:  # drawn last: the rest of the chip is as without it
            draw("readout_skip.weight", skip)
        noise_gen = torch.Generator().manual_seed(int(seed) + 1_000_003)
        return cls(prof, int(seed), gain, zero, high, nu, th, noise_gen)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of wall time pass on the chip (conductances drift)."""
        self.age_s += float(seconds)

    def reprogram(self) -> None:
        """Weights were just written: drift starts again from zero."""
        self.age_s = 0.0


def weight_shapes(cfg: NetworkConfig) -> dict[str, tuple[int, int]]:
    shapes: dict[str, tuple[int, int]] = {}
    n_prev = cfg.n_inputs
    for i, n in enumerate(cfg.hidden):
        shapes[f"layers.{i}.weight"] = (n, n_prev)
        n_prev = n
    if cfg.recurrent:
        for i, n in enumerate(cfg.hidden):
            shapes[f"recurrent.{i}"] = (n, n)
    shapes["readout.weight"] = (cfg.n_outputs, n_prev)
    if cfg.readout_skip:
        shapes["readout_skip.weight"] = (cfg.n_outputs, cfg.n_inputs)
    return shapes
