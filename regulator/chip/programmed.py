"""Weights as programmed on a chip, kept from one inference to the next.

Programming a weight on a chip (quantising it, applying stuck devices, mismatch and
drift) depends only on the weight's value and on the chip; inference on a served model
repeats it with the same inputs every forward. :class:`ProgrammedWeights` keeps the
result until one of them changes. Per-read noise is not part of it: each read draws anew.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from regulator.chip.profiles import ChipProfile

if TYPE_CHECKING:
    from regulator.chip.network import ChipInstance

Program = Callable[[str, torch.Tensor, "ChipInstance"], torch.Tensor]
"""``program(name, w, chip)``: weight ``name`` of value ``w`` as programmed on ``chip``."""


class ProgrammedWeights:
    """Weights as programmed on recently used chips, so that inference does not
    re-quantise them every forward. An entry holds while the weight tensor is the same
    object at the same version (in-place writes bump it) on the same chip with the same
    profile, per-synapse draws and age. Not copied or pickled: a copy starts empty.

    >>> from regulator.chip.network import ChipInstance, NetworkConfig
    >>> chip = ChipInstance.create("loihi", NetworkConfig(n_inputs=2, hidden=(3,), n_outputs=1))
    >>> calls = []
    >>> def program(name, w, chip):
    ...     calls.append(name)
    ...     return w.round()
    >>> cache, w = ProgrammedWeights(), torch.tensor([[0.4, 1.6, -2.2]])
    >>> cache.get("readout.weight", w, chip, program).tolist()
    [[0.0, 2.0, -2.0]]
    >>> _ = cache.get("readout.weight", w, chip, program)  # the same value: kept
    >>> _ = w.mul_(2.0)  # an in-place write
    >>> cache.get("readout.weight", w, chip, program).tolist(), len(calls)
    ([[1.0, 3.0, -4.0]], 2)
    """

    def __init__(self, max_chips: int = 8) -> None:
        self._max = max_chips
        self._lock = threading.Lock()  # forwards on several threads share one network
        self._chips: OrderedDict[int, tuple[weakref.ref[ChipInstance], dict[str, _Programmed]]]
        self._chips = OrderedDict()

    def __deepcopy__(self, memo: dict[int, object]) -> ProgrammedWeights:
        return ProgrammedWeights(self._max)

    def __reduce__(self) -> tuple[type[ProgrammedWeights], tuple[int]]:
        return (ProgrammedWeights, (self._max,))

    def get(self, name: str, w: torch.Tensor, chip: ChipInstance, program: Program) -> torch.Tensor:
        """``program(name, w, chip)``, computed again only when it could differ."""
        with self._lock:
            return self._get(name, w, chip, program)

    def _get(
        self, name: str, w: torch.Tensor, chip: ChipInstance, program: Program
    ) -> torch.Tensor:
        key = id(chip)
        slot = self._chips.get(key)
        if slot is None or slot[0]() is not chip:
            slot = (weakref.ref(chip), {})
            self._chips[key] = slot
            while len(self._chips) > self._max:
                self._chips.popitem(last=False)
        self._chips.move_to_end(key)
        entry = slot[1].get(name)
        if entry is None or not entry.holds(name, w, chip):
            entry = _Programmed.of(name, w, chip, program(name, w, chip))
            slot[1][name] = entry
        return entry.value


@dataclass(frozen=True)
class _Programmed:
    """One programmed weight and what it was computed from."""

    weight: weakref.ref[torch.Tensor]
    version: int
    profile: ChipProfile
    age_s: float
    draws: tuple[torch.Tensor, ...]  # the chip's per-synapse gain, stuck masks, drift
    draw_versions: tuple[int, ...]
    value: torch.Tensor

    @staticmethod
    def _draws(name: str, chip: ChipInstance) -> tuple[torch.Tensor, ...]:
        return tuple(
            d[name] for d in (chip.weight_gain, chip.stuck_zero, chip.stuck_max, chip.drift_nu)
        )

    @classmethod
    def of(cls, name: str, w: torch.Tensor, chip: ChipInstance, value: torch.Tensor) -> _Programmed:
        draws = cls._draws(name, chip)
        versions = tuple(d._version for d in draws)
        return cls(weakref.ref(w), w._version, chip.profile, chip.age_s, draws, versions, value)

    def holds(self, name: str, w: torch.Tensor, chip: ChipInstance) -> bool:
        """Whether ``value`` is still ``w`` programmed on ``chip``."""
        draws = self._draws(name, chip)
        return (
            self.weight() is w
            and self.version == w._version
            and self.profile is chip.profile
            and self.age_s == chip.age_s
            and all(a is b for a, b in zip(draws, self.draws, strict=True))
            and tuple(d._version for d in draws) == self.draw_versions
        )
