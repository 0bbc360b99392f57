"""Weight and state quantisation."""

from __future__ import annotations

import pytest
import torch

from regulator.chip.network import ChipInstance, NetworkConfig, SpikingNetwork
from regulator.chip.profiles import ChipProfile
from regulator.chip.quant import quantise_state, quantise_weight


@pytest.mark.parametrize("bits", range(1, 9))
def test_n_bits_give_at_most_2_to_the_n_levels_per_layer(bits: int) -> None:
    cfg = NetworkConfig(n_inputs=16, hidden=(64, 32), n_outputs=6, recurrent=True)
    net = SpikingNetwork(cfg, init_seed=3)
    chip = ChipInstance.create(ChipProfile(name="x", weight_bits=bits), cfg, seed=0)
    for name, w in net.effective_weights(chip).items():
        levels = torch.unique(w).numel()
        assert levels <= 2**bits, (name, levels)
        assert levels >= min(2, 2**bits), name  # not collapsed to one value


def test_ste_passes_gradient_and_matches_exact_forward() -> None:
    w = torch.randn(5, 4, requires_grad=True)
    q = quantise_weight(w, 3, ste=True)
    assert torch.equal(q.detach(), quantise_weight(w.detach(), 3, ste=False))
    q.sum().backward()
    assert w.grad is not None and torch.equal(w.grad, torch.ones_like(w))


def test_state_is_clipped_and_on_grid() -> None:
    x = torch.tensor([-100.0, -0.3, 0.0, 0.26, 100.0])
    q = quantise_state(x, bits=4, state_range=2.0, ste=False)
    assert q.min() >= -2.0 and q.max() <= 2.0
    step = 2.0 / 8
    assert torch.allclose(q / step, torch.round(q / step))
