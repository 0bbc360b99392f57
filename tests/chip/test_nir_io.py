"""NIR export: round trip, Norse's own importer, and snnTorch as the peer reader."""

from __future__ import annotations

import warnings
from pathlib import Path

import nir
import pytest
import torch
from norse.torch import LICell, LIParameters, from_nir
from snntorch import utils as snn_utils
from snntorch.import_nir import import_from_nir

from regulator.chip.network import ChipInstance, NetworkConfig, SpikingNetwork
from regulator.chip.nir_io import (
    export_nir,
    graph_profile,
    load_nir,
    snntorch_compatible,
    to_nir,
)
from regulator.errors import ConfigError, ModelFolderError

CFG = NetworkConfig(n_inputs=16, hidden=(64,), n_outputs=6, n_steps=40)


def _input(cfg: NetworkConfig, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(cfg.n_steps, batch, cfg.n_inputs, generator=g) * 1.5


@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("profile", ["ideal", "loihi"])
def test_export_load_round_trip_gives_identical_outputs(
    tmp_path: Path, recurrent: bool, profile: str
) -> None:
    cfg = NetworkConfig(n_inputs=8, hidden=(32, 16), n_outputs=4, recurrent=recurrent)
    net = SpikingNetwork(cfg, init_seed=3)
    chip = ChipInstance.create(profile, cfg)
    path = export_nir(net, tmp_path / "net.nir", chip)
    back = load_nir(path)
    assert back.cfg == cfg
    x = _input(cfg, 16)
    with torch.no_grad():
        # The file holds the chip-applied weights: the loaded float network runs them.
        want = net(x, ChipInstance.create("ideal", cfg)) if profile == "ideal" else None
        got = back(x)
        again = load_nir(export_nir(back, tmp_path / "again.nir"))(x)
    assert torch.equal(got.outputs, again.outputs)
    for name, w in net.effective_weights(chip).items():
        assert torch.equal(back.effective_weights(None)[name], w), name
    if want is not None:
        assert torch.equal(got.outputs, want.outputs)
        assert torch.equal(got.hidden_counts, want.hidden_counts)
    meta_profile = graph_profile(nir.read(str(path)))
    assert meta_profile is not None and meta_profile["name"] == profile


def test_graph_uses_nir_cuba_nodes_with_norse_constants() -> None:
    g = to_nir(SpikingNetwork(CFG))
    lif, li = g.nodes["lif.0"], g.nodes["readout_li"]
    assert isinstance(lif, nir.CubaLIF) and isinstance(li, nir.CubaLI)
    assert lif.tau_syn[0] == pytest.approx(1 / CFG.tau_syn_inv)
    assert lif.tau_mem[0] == pytest.approx(1 / CFG.tau_mem_inv)
    assert lif.w_in[0] == pytest.approx(1 / (CFG.tau_syn_inv * CFG.dt_s))
    assert lif.r[0] == 1 and lif.v_leak[0] == 0 and lif.v_reset is not None
    assert g.metadata["dt_s"] == CFG.dt_s


def test_bad_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="not found"):
        load_nir(tmp_path / "none.nir")
    plain = nir.NIRGraph.from_list(nir.Affine(weight=torch.ones(2, 2).numpy(), bias=None))
    with pytest.raises(ModelFolderError, match="network_config"):
        from regulator.chip.nir_io import from_nir as ours

        ours(plain)
    mismatch = ChipInstance.create("memristive", CFG)
    export_nir(SpikingNetwork(CFG), tmp_path / "m.nir", mismatch)
    with pytest.raises(ConfigError, match="per-neuron thresholds"):
        load_nir(tmp_path / "m.nir")


def test_norse_reads_the_file_and_gives_the_same_outputs(tmp_path: Path) -> None:
    net = SpikingNetwork(CFG, init_seed=2)
    path = export_nir(net, tmp_path / "net.nir")
    with warnings.catch_warnings():
        # norse.torch.from_nir goes through nirtorch.load, which warns that it is deprecated.
        warnings.simplefilter("ignore", DeprecationWarning)
        module = from_nir(nir.read(str(path)), dt=CFG.dt_s)
    x = _input(CFG, 32, seed=4)
    # Norse 1.1's importer has no mapping for CubaLI and passes the readout's currents
    # straight to the output; we integrate them with Norse's own LICell.
    li = LICell(
        LIParameters(
            tau_syn_inv=torch.tensor(CFG.tau_syn_inv), tau_mem_inv=torch.tensor(CFG.tau_mem_inv)
        ),
        dt=CFG.dt_s,
    )
    with torch.no_grad():
        ours = net(x)
        state, li_state = None, None
        vsum = torch.zeros(32, CFG.n_outputs)
        for t in range(CFG.n_steps):
            cur, state = module(x[t], state)
            v, li_state = li(cur, li_state)
            vsum = vsum + v
    peer = vsum / CFG.n_steps
    assert ours.hidden_counts.sum() > 0
    # Norse integrates NIR's ODE (dt/tau_syn * w_in * x rather than x): float rounding only.
    assert torch.allclose(peer, ours.outputs, atol=1e-4, rtol=0)
    assert torch.equal(peer.argmax(1), ours.outputs.argmax(1))


def test_snntorch_predictions_agree_with_the_ideal_chip(tmp_path: Path) -> None:
    net = SpikingNetwork(CFG, init_seed=2)
    path = export_nir(net, tmp_path / "net.nir")
    graph = nir.read(str(path))
    # snnTorch 1.0 refuses the NIR-spec graph as written (it assumes dt = 1e-4 s and
    # r = tau_mem/dt, and maps no CubaLI); snntorch_compatible re-expresses the same
    # dynamics in its conventions.
    with pytest.raises(AssertionError, match="r not supported"):
        import_from_nir(graph)
    module = import_from_nir(snntorch_compatible(graph))
    mods = dict(module.named_modules())
    x = _input(CFG, 500, seed=11)
    with torch.no_grad():
        ours = net(x, ChipInstance.create("ideal", CFG))
        snn_utils.reset(module)
        mems = []
        for t in range(CFG.n_steps):
            module(x[t])
            mems.append(mods["readout_li"].mem.clone())
    # snnTorch's membrane is ours divided by dt/tau_mem; argmax is unaffected.
    peer = torch.stack(mems).mean(0) * (CFG.dt_s * CFG.tau_mem_inv)
    agreement = (peer.argmax(1) == ours.outputs.argmax(1)).float().mean().item()
    close = ((peer - ours.outputs).abs().amax(1) < 1e-4).float().mean().item()
    print(f"snnTorch agreement {agreement:.3f}, samples within 1e-4: {close:.3f}")
    assert agreement >= 0.95, agreement
    # snnTorch compares mem * tau_mem/dt with a rescaled threshold: float rounding can flip
    # a spike where the membrane sits at threshold, and that sample then diverges.
    assert close >= 0.9, close
