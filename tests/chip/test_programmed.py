"""The programmed-weight cache: bounded, and never what keeps a weight alive."""

from __future__ import annotations

import gc
import weakref

import torch

from regulator.chip.network import ChipInstance, NetworkConfig
from regulator.chip.programmed import ProgrammedWeights

CFG = NetworkConfig(n_inputs=2, hidden=(3,), n_outputs=1)


def _program(name: str, w: torch.Tensor, chip: ChipInstance) -> torch.Tensor:
    return w * 2.0


def test_weights_are_held_weakly_and_a_new_tensor_is_programmed_anew() -> None:
    cache, chip = ProgrammedWeights(), ChipInstance.create("loihi", CFG)
    w = torch.ones(1, 3)
    ref = weakref.ref(w)
    assert cache.get("readout.weight", w, chip, _program).tolist() == [[2.0, 2.0, 2.0]]
    del w
    gc.collect()
    assert ref() is None
    # A new tensor (perhaps at the old one's address) is never served the old value.
    assert cache.get("readout.weight", torch.zeros(1, 3), chip, _program).sum() == 0


def test_chips_beyond_the_bound_are_forgotten_and_recomputed() -> None:
    cache = ProgrammedWeights(max_chips=2)
    calls: list[int] = []

    def program(name: str, w: torch.Tensor, chip: ChipInstance) -> torch.Tensor:
        calls.append(chip.seed)
        return w

    w = torch.ones(1, 3)
    chips = [ChipInstance.create("loihi", CFG, seed=k) for k in range(3)]
    for chip in [*chips, chips[2], chips[0]]:
        cache.get("readout.weight", w, chip, program)
    assert calls == [0, 1, 2, 0]  # chip 2 was kept, chip 0 had been evicted
