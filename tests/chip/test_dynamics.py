"""The fused inference loops against Norse's own step functions."""

from __future__ import annotations

import torch
from norse.torch.functional.leaky_integrator import LIParameters, LIState, li_feed_forward_step
from norse.torch.functional.lif import LIFFeedForwardState, LIFParameters, lif_feed_forward_step

from regulator.chip.dynamics import LIFParams, grid_scale, li_kernel, li_mean, lif_sequence_

DT, TAU_MEM, TAU_SYN = 1e-3, 100.0, 200.0


def _factors() -> tuple[float, float]:
    a_mem = DT * torch.tensor(TAU_MEM)
    neg_b = -DT * torch.tensor(TAU_SYN)
    return float(a_mem), float(neg_b)


def _currents(t: int, b: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t, b, n, generator=g) * 4.0 + 1.0


def test_lif_sequence_is_norses_step_bit_for_bit() -> None:
    cur = _currents(50, 7, 33, seed=1)
    v_th = 1.0 + 0.05 * torch.randn(33, generator=torch.Generator().manual_seed(2))
    p = LIFParameters(
        tau_syn_inv=torch.tensor(TAU_SYN), tau_mem_inv=torch.tensor(TAU_MEM), v_th=v_th
    )
    state = LIFFeedForwardState(v=torch.zeros(7, 33), i=torch.zeros(7, 33))
    zs = []
    for t in range(cur.shape[0]):
        z, state = lif_feed_forward_step(cur[t], state, p, dt=DT)
        zs.append(z)
    a_mem, neg_b = _factors()
    ours, last = lif_sequence_(cur.clone(), LIFParams(a_mem=a_mem, neg_b_syn=neg_b, v_th=v_th))
    assert torch.stack(zs).sum() > 100, "the test currents must make the layer spike"
    assert torch.equal(ours, torch.stack(zs))
    assert torch.equal(last.v, state.v) and torch.equal(last.i, state.i)


def test_lif_sequence_writes_its_spikes_over_the_currents() -> None:
    cur = _currents(5, 2, 3, seed=3)
    a_mem, neg_b = _factors()
    z, _ = lif_sequence_(cur, LIFParams(a_mem=a_mem, neg_b_syn=neg_b, v_th=1.0))
    assert z is cur and set(z.unique().tolist()) <= {0.0, 1.0}


def test_li_mean_is_the_mean_of_norses_li_steps() -> None:
    cur = _currents(64, 5, 6, seed=4)
    p = LIParameters(tau_syn_inv=torch.tensor(TAU_SYN), tau_mem_inv=torch.tensor(TAU_MEM))
    state = LIState(v=torch.zeros(5, 6), i=torch.zeros(5, 6))
    v_sum = torch.zeros(5, 6, dtype=torch.float64)
    for t in range(cur.shape[0]):
        v, state = li_feed_forward_step(cur[t].double(), state, p, dt=DT)
        v_sum = v_sum + v
    a_mem, neg_b = _factors()
    ours = li_mean(cur, li_kernel(64, a_mem, neg_b, torch.float32))
    expected = (v_sum / 64).float()
    assert torch.allclose(ours, expected, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))


def test_a_power_of_two_grid_run_in_units_of_the_step_gives_the_same_result() -> None:
    cur = _currents(40, 6, 20, seed=5)
    a_mem, neg_b = _factors()
    p = LIFParams(a_mem=a_mem, neg_b_syn=neg_b, v_th=1.0, state_bits=16, state_range=16.0)
    assert grid_scale(p, 0.02) == 2.0**11
    runs = []
    for normal in (False, True):
        g = torch.Generator().manual_seed(7)
        runs.append(lif_sequence_(cur.clone(), p, None, 0.02, g, currents_normal=normal))
    (z_plain, s_plain), (z_grid, s_grid) = runs
    assert z_plain.sum() > 20
    assert torch.equal(z_plain, z_grid)
    assert torch.equal(s_plain.v, s_grid.v) and torch.equal(s_plain.i, s_grid.i)
