"""The chip network: determinism, fidelity to Norse, hardware effects, bad input."""

from __future__ import annotations

import copy
import io
import math
import pickle
from typing import cast

import pytest
import torch
from norse.torch import LICell, LIFCell, LIFParameters, LIParameters
from torch import nn

from regulator.chip.energy import EnergyModel
from regulator.chip.network import ChipInstance, NetOutput, NetworkConfig, SpikingNetwork
from regulator.chip.profiles import ChipProfile
from regulator.errors import InputError

CFG = NetworkConfig(n_inputs=16, hidden=(64, 32), n_outputs=6, n_steps=40)


def _input(cfg: NetworkConfig, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(cfg.n_steps, batch, cfg.n_inputs, generator=g) * 1.5


def _linears(net: SpikingNetwork) -> list[nn.Linear]:
    return [cast(nn.Linear, m) for m in net.layers]


# -- one chip per seed ---------------------------------------------------------------------


def test_same_seed_gives_same_chip_and_different_seed_differs() -> None:
    a = ChipInstance.create("memristive", CFG, seed=7)
    b = ChipInstance.create("memristive", CFG, seed=7)
    c = ChipInstance.create("memristive", CFG, seed=8)
    for name in a.weight_gain:
        assert torch.equal(a.weight_gain[name], b.weight_gain[name])
        assert torch.equal(a.stuck_zero[name], b.stuck_zero[name])
        assert torch.equal(a.drift_nu[name], b.drift_nu[name])
    assert not torch.equal(a.weight_gain["layers.0.weight"], c.weight_gain["layers.0.weight"])
    net = SpikingNetwork(CFG, init_seed=1)
    x = _input(CFG, 8)
    with torch.no_grad():
        oa, ob, oc = net(x, a), net(x, b), net(x, c)
    assert torch.equal(oa.outputs, ob.outputs)  # noise generator seeded with the chip too
    assert not torch.equal(oa.outputs, oc.outputs)


# -- ideal profile against plain Norse -----------------------------------------------------


def _norse_peer(
    net: SpikingNetwork, x: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Hidden spikes [T,B,n] and pre-threshold membranes per layer, readout mean, via Norse."""
    cfg = net.cfg
    lif_p = LIFParameters(
        tau_syn_inv=torch.tensor(cfg.tau_syn_inv),
        tau_mem_inv=torch.tensor(cfg.tau_mem_inv),
        v_th=torch.tensor(cfg.v_th),
        alpha=torch.tensor(cfg.surrogate_alpha),
    )
    li_p = LIParameters(
        tau_syn_inv=torch.tensor(cfg.tau_syn_inv), tau_mem_inv=torch.tensor(cfg.tau_mem_inv)
    )
    s = x
    spikes, membranes = [], []
    for lin in _linears(net):
        cell = LIFCell(lif_p, dt=cfg.dt_s)
        state = None
        zs, vs = [], []
        for t in range(s.shape[0]):
            z, state = cell(lin(s[t]), state)
            # Norse resets v to 0 after a spike; where it did not spike, v is the
            # membrane the threshold saw.
            zs.append(z)
            vs.append(state.v)
        s = torch.stack(zs)
        spikes.append(s)
        membranes.append(torch.stack(vs))
    li = LICell(li_p, dt=cfg.dt_s)
    state = None
    vsum = torch.zeros(x.shape[1], cfg.n_outputs)
    for t in range(s.shape[0]):
        v, state = li(net.readout(s[t]), state)
        vsum = vsum + v
    return spikes, membranes, vsum / s.shape[0]


def test_ideal_profile_reproduces_plain_norse() -> None:
    net = SpikingNetwork(CFG, init_seed=2)
    x = _input(CFG, 32, seed=5)
    chip = ChipInstance.create("ideal", CFG, seed=0)
    with torch.no_grad():
        ours = net(x, chip)
        spikes, membranes, readout = _norse_peer(net, x)
    peer_counts = torch.cat([s.sum(0) for s in spikes], dim=1)
    assert peer_counts.sum() > 0, "the test network must spike"
    if torch.equal(ours.hidden_counts, peer_counts):
        assert torch.allclose(ours.outputs, readout, atol=1e-6, rtol=0)
        return
    # A flip is allowed only where the membrane is within float rounding of threshold:
    # check the first time step at which the peer's spikes could disagree with ours.
    diff = (ours.hidden_counts != peer_counts).nonzero()
    for b, n in diff.tolist():
        layer = 0 if n < CFG.hidden[0] else 1
        k = n if layer == 0 else n - CFG.hidden[0]
        v = membranes[layer][:, b, k]
        near = ((v - CFG.v_th).abs() < 1e-5) | (spikes[layer][:, b, k] > 0)
        assert near.any(), f"spike flip at sample {b}, neuron {n} away from threshold"


def test_recurrent_network_runs_and_spikes() -> None:
    cfg = NetworkConfig(n_inputs=4, hidden=(24,), n_outputs=3, recurrent=True, n_steps=20)
    net = SpikingNetwork(cfg)
    with torch.no_grad():
        out = net(_input(cfg, 5))
    assert out.hidden_counts.sum() > 0
    assert out.telemetry.synaptic_ops > 0


# -- hardware effects ----------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_transmission_failure_drops_a_fraction_p_of_events(p: float) -> None:
    cfg = NetworkConfig(n_inputs=32, hidden=(64,), n_outputs=4, n_steps=100)
    net = SpikingNetwork(cfg, init_seed=4)
    chip = ChipInstance.create(ChipProfile(name="x", transmission_failure_p=p), cfg, seed=3)
    g = torch.Generator().manual_seed(9)
    # Batch 1: with a batch, the samples of one step share a draw and are not independent.
    x = (torch.rand(cfg.n_steps, 1, cfg.n_inputs, generator=g) < 0.2).float()
    with torch.no_grad():
        tel = net(x, chip, input_is_spikes=True).telemetry
    dropped = tel.extra["synaptic_events_dropped"]
    n = tel.synaptic_ops + dropped
    assert n > 10_000
    # Each event is lost independently: dropped ~ Binomial(n, p); 5 sigma two-sided.
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(dropped - n * p) < 5 * sigma, (dropped / n, p)


def test_energy_of_a_known_spike_pattern_equals_the_hand_sum() -> None:
    # dt * tau_inv = 1: the synaptic current and membrane forget everything each step,
    # so v_t = weighted input at t and the hidden spikes are known by hand.
    cfg = NetworkConfig(
        n_inputs=3, hidden=(2,), n_outputs=2, n_steps=4, tau_syn_inv=1000.0, tau_mem_inv=1000.0
    )
    net = SpikingNetwork(cfg)
    with torch.no_grad():
        _linears(net)[0].weight.copy_(torch.tensor([[2.0, 0.0, 2.0], [0.0, 0.0, 2.0]]))
        net.readout.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    x = torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0]]).unsqueeze(1)
    with torch.no_grad():
        out = net(x, ChipInstance.create("ideal", cfg), input_is_spikes=True)
    tel = out.telemetry
    # Input events x non-zero fan-out: t0 in0 (1); t1 in1 (0); t2 in0 (1) + in2 (2) = 4.
    # Hidden spikes: t0 h0; t2 h0, h1 = 3; readout fan-out h0: 2, h1: 1 -> 2 + 3 = 5.
    assert out.hidden_counts.tolist() == [[2.0, 1.0]]
    assert tel.synaptic_ops == 9
    # Neurons with input: hidden t0 1, t2 2; readout t0 2, t2 2 -> 7 of 4 neurons x 4 steps.
    assert tel.active_neuron_updates == 7 and tel.neuron_updates == 16
    # Like-for-like dense ANN: the 3 distinct input points (t0, t1, t2) each through
    # layer 0 (6 weights), the readout (4 weights) once: 22 MACs.
    assert tel.spikes_routed == 3 and tel.dense_macs == 22
    e = EnergyModel("loihi").energy(tel)
    hand_pj = 9 * 23.6 + 7 * 81 + 9 * 52 + 3 * 1.7  # = 1252.5 pJ
    assert e.inference_j == pytest.approx(hand_pj * 1e-12, rel=1e-12)
    assert e.dense_ann_j == pytest.approx(22 * (4.6 + 5.0) * 1e-12, rel=1e-12)


def test_gradients_flow_through_quantised_and_noisy_forward() -> None:
    net = SpikingNetwork(CFG, init_seed=1)
    chip = ChipInstance.create("memristive", CFG, seed=0)
    out = net(_input(CFG, 8), chip)
    loss = nn.functional.cross_entropy(out.outputs, torch.arange(8) % CFG.n_outputs)
    loss.backward()
    for name, p in net.named_parameters():
        if name.endswith("weight"):
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


def test_drift_shrinks_weights_with_age_and_reprogram_resets() -> None:
    net = SpikingNetwork(CFG)
    chip = ChipInstance.create(ChipProfile(name="x", drift_nu=0.05), CFG, seed=0)
    fresh = net.effective_weights(chip)
    chip.advance(3600.0)
    aged = net.effective_weights(chip)
    chip.advance(3600.0 * 24)
    older = net.effective_weights(chip)
    for name, w in fresh.items():
        nz = w != 0
        assert (aged[name].abs()[nz] < w.abs()[nz]).all(), name
        assert (older[name].abs()[nz] < aged[name].abs()[nz]).all(), name
    chip.reprogram()
    assert all(torch.equal(net.effective_weights(chip)[n], w) for n, w in fresh.items())


def test_state_round_trips() -> None:
    net = SpikingNetwork(CFG, init_seed=5)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    other = SpikingNetwork(CFG, init_seed=6)
    other.load_state_dict(torch.load(buf, weights_only=True))
    x = _input(CFG, 4)
    chip = ChipInstance.create("loihi", CFG)
    with torch.no_grad():
        assert torch.equal(net(x, chip).outputs, other(x, chip).outputs)


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(40, 2, 15), (40, 16), (2, 40, 2, 16)])
def test_wrong_input_shape_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(InputError, match=r"expected input \[T, B, 16\]"):
        SpikingNetwork(CFG)(torch.zeros(shape))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_is_refused(bad: float) -> None:
    x = torch.zeros(CFG.n_steps, 2, CFG.n_inputs)
    x[3, 1, 5] = bad
    with pytest.raises(InputError, match="NaN or infinite"):
        SpikingNetwork(CFG)(x)


# -- the fused inference path against the step-by-step definition --------------------------

ODD = ChipProfile(  # a grid that is not a power of two, noise and lost events
    name="odd",
    weight_bits=3,
    state_bits=12,
    state_range=5.0,
    mismatch_threshold_sigma=0.05,
    noise_membrane_sigma=0.05,
    noise_weight_sigma=0.01,
    transmission_failure_p=0.1,
)
RECURRENT = NetworkConfig(n_inputs=4, hidden=(24,), n_outputs=3, recurrent=True, n_steps=20)


def _same_forward(a: NetOutput, b: NetOutput) -> None:
    assert a.last_spikes is not None and b.last_spikes is not None
    assert torch.equal(a.last_spikes, b.last_spikes)
    assert torch.equal(a.hidden_counts, b.hidden_counts)
    assert a.telemetry == b.telemetry
    # The readout mean is one weighted sum instead of T steps: float rounding only.
    assert torch.allclose(a.outputs, b.outputs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("profile", ["ideal", "loihi", "memristive", ODD, None])
@pytest.mark.parametrize("cfg", [CFG, RECURRENT], ids=["feed-forward", "recurrent"])
@pytest.mark.parametrize("spikes", [False, True], ids=["currents", "spikes"])
def test_inference_path_gives_the_stepwise_spikes_and_draws(
    profile: str | ChipProfile | None, cfg: NetworkConfig, spikes: bool
) -> None:
    net = SpikingNetwork(cfg, init_seed=3)
    x = _input(cfg, 5, seed=8)
    if spikes:
        x = (x > 1.0).float()
    chips = [None if profile is None else ChipInstance.create(profile, cfg, seed=4) for _ in "ab"]
    if profile not in (None, "ideal"):
        for chip in chips:
            assert chip is not None
            chip.advance(600.0)  # drift, where the profile has it
    with torch.no_grad():
        # Twice in a row (the second forward continues the noise stream), then in
        # low-power mode.
        for n_steps in (None, None, cfg.n_steps // 2):
            fast = net(x, chips[0], input_is_spikes=spikes, n_steps=n_steps)
            ref = net.forward_stepwise(x[: n_steps or cfg.n_steps], chips[1], spikes)
            _same_forward(fast, ref)
    if chips[0] is not None and chips[1] is not None:
        # The same random numbers were drawn, in the same number.
        assert torch.equal(chips[0].generator.get_state(), chips[1].generator.get_state())


# Hidden spike trains (per sample, per neuron, over 12 steps) of the implementation before
# the fused inference path (commit 38c9954), for a network whose input sums have at most
# two terms (exact in any order, so the same on every CPU).
PINNED = {
    "loihi": [
        [
            ["000000000000", "000011111111", "000000000100"],
            ["000000000000", "000001010101", "000011111111"],
        ],
        [
            ["000000000000", "000111111111", "000001000100"],
            ["000000000000", "000010101101", "000101111111"],
        ],
        [
            ["000000000000", "010111101011", "000100100000"],
            ["000000000000", "001010100101", "010110101011"],
        ],
    ],
    "memristive": [
        [
            ["000000000000", "000011110111", "000000010000"],
            ["000000000000", "000001010101", "000011111111"],
        ],
        [
            ["000000000000", "000111111111", "000001001010"],
            ["000000000000", "000010101101", "000101111111"],
        ],
        [
            ["000000000000", "010111010101", "000100100001"],
            ["000000000000", "001010100100", "010111010101"],
        ],
    ],
}
PINNED_SECOND_COUNTS = {  # the second forward on the same chip: the noise stream moved on
    "loihi": [[0, 8, 1, 0, 4, 8], [0, 9, 2, 0, 5, 8], [0, 8, 2, 0, 5, 7]],
    "memristive": [[0, 8, 1, 0, 4, 8], [0, 9, 2, 0, 4, 8], [0, 8, 2, 0, 5, 7]],
}


@pytest.mark.parametrize("profile", sorted(PINNED))
def test_spikes_for_a_seed_are_those_of_the_previous_implementation(profile: str) -> None:
    cfg = NetworkConfig(n_inputs=2, hidden=(6,), n_outputs=2, n_steps=12)
    net = SpikingNetwork(cfg, init_seed=4)
    chip = ChipInstance.create(profile, cfg, seed=5)
    g = torch.Generator().manual_seed(6)
    x = (torch.rand(12, 3, 2, generator=g) < 0.5).float()
    with torch.no_grad():
        first = net(x, chip, input_is_spikes=True)
        second = net(x, chip, input_is_spikes=True)
    assert first.last_spikes is not None
    s = first.last_spikes.int()
    trains = [["".join(str(int(v)) for v in s[:, b, k]) for k in range(6)] for b in range(3)]
    assert trains == [row[0] + row[1] for row in PINNED[profile]]
    assert second.hidden_counts.int().tolist() == PINNED_SECOND_COUNTS[profile]


def test_programmed_weights_follow_every_change_of_weights_or_chip() -> None:
    net = SpikingNetwork(CFG, init_seed=1)
    chip = ChipInstance.create(ChipProfile(name="x", weight_bits=4, drift_nu=0.05), CFG, seed=2)
    x = _input(CFG, 3)

    def agree() -> None:
        with torch.no_grad():
            _same_forward(net(x, chip), net.forward_stepwise(x, chip, False))

    agree()
    with torch.no_grad():
        _linears(net)[0].weight.mul_(1.5)  # an in-place write (optimiser step, copy_)
    agree()
    chip.advance(3600.0)
    agree()
    chip.reprogram()
    agree()
    other = SpikingNetwork(CFG, init_seed=9)
    net.load_state_dict(other.state_dict())
    agree()
    loihi = ChipInstance.create("loihi", CFG, seed=2)
    with torch.no_grad():
        _same_forward(net(x, loihi), net.forward_stepwise(x, loihi, False))
    agree()


def test_a_used_network_copies_and_pickles_and_the_copy_computes_the_same() -> None:
    net = SpikingNetwork(CFG, init_seed=1)
    x = _input(CFG, 2)
    with torch.no_grad():
        before = net(x, ChipInstance.create("loihi", CFG))
        twin = copy.deepcopy(net)
        revived = pickle.loads(pickle.dumps(net))
        _linears(twin)[0].weight.mul_(0.5)  # the copy owns its weights
        assert torch.equal(revived(x, ChipInstance.create("loihi", CFG)).outputs, before.outputs)
        assert torch.equal(net(x, ChipInstance.create("loihi", CFG)).outputs, before.outputs)
        changed = twin(x, ChipInstance.create("loihi", CFG))
    assert not torch.equal(changed.hidden_counts, before.hidden_counts)


@pytest.mark.parametrize("profile", ["loihi", "memristive"])
@pytest.mark.parametrize("scale", [1e-39, 1e-30, 1e30], ids=["subnormal", "tiny", "huge"])
def test_inference_path_gives_the_stepwise_spikes_for_extreme_inputs(
    profile: str, scale: float
) -> None:
    # Quantised layers run in units of their grid step only where that is exact.
    net = SpikingNetwork(CFG, init_seed=3)
    x = _input(CFG, 4, seed=2) * scale
    chips = [ChipInstance.create(profile, CFG, seed=1) for _ in "ab"]
    with torch.no_grad():
        _same_forward(net(x, chips[0]), net.forward_stepwise(x, chips[1], False))
