"""The rehearsal readout: skip synapses on the chip, the fit beside the source rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from regulator.chip.network import ChipInstance, NetworkConfig, SpikingNetwork
from regulator.chip.nir_io import export_nir, load_nir, to_nir
from regulator.chip.profiles import ChipProfile
from regulator.errors import ConfigError
from regulator.meta.adapt import adapt
from regulator.meta.evaluate import query_metric
from regulator.meta.model import ModelBundle
from regulator.meta.peers import Peers, SourceData
from regulator.meta.rehearsal import REHEARSAL_X, has_rehearsal
from regulator.meta.train import TrainConfig, build_trainer, finalise, train_steps
from regulator.meta.writes import commit_update
from regulator.tasks.formats import save_npz

CHANNELS = 12
SEPARATION = 0.3  # class centres' spread, in log units
NOISE = 0.3  # per-sample spread, in log units
CLASS_DRIFT = 0.1  # drift per channel and class, in log units (a common one of 1.5 too)
SHOTS = 2
# (measured at these settings: rehearsal 0.929, prototype 0.927, no adaptation 0.383,
# logistic regression on the shots 0.852)


def _skip_net(seed: int = 0) -> SpikingNetwork:
    net = SpikingNetwork(
        NetworkConfig(n_inputs=6, hidden=(10,), n_outputs=3, n_steps=5, readout_skip=True)
    )
    assert net.readout_skip is not None
    with torch.no_grad():
        net.readout_skip.weight.copy_(
            torch.randn(3, 6, generator=torch.Generator().manual_seed(seed))
        )
    return net


def test_skip_path_fused_equals_stepwise_and_its_events_are_counted() -> None:
    net = _skip_net()
    chip = ChipInstance.create("loihi", net.cfg, seed=3)
    x = torch.rand(5, 4, 6) * 2.0
    with torch.no_grad():
        fused = net(x, chip)
        step = net.forward_stepwise(x, ChipInstance.create("loihi", net.cfg, seed=3), False)
        silent = SpikingNetwork(net.cfg)
        silent.load_state_dict(net.state_dict())
        assert silent.readout_skip is not None
        silent.readout_skip.weight.zero_()
        without = silent(x, ChipInstance.create("loihi", net.cfg, seed=3))
    torch.testing.assert_close(fused.outputs, step.outputs, rtol=1e-4, atol=1e-5)
    assert torch.equal(fused.hidden_counts, step.hidden_counts)
    # Every non-zero input reaches each of the 3 readout neurons through a skip synapse.
    extra = fused.telemetry.synaptic_ops - without.telemetry.synaptic_ops
    assert extra == pytest.approx(float((x != 0).sum()) * 3)
    assert not torch.allclose(fused.outputs, without.outputs)


def test_a_zero_skip_leaves_the_network_and_the_chip_as_without_it() -> None:
    cfg = NetworkConfig(n_inputs=6, hidden=(10,), n_outputs=3, n_steps=5)
    plain = SpikingNetwork(cfg)
    skip = SpikingNetwork(cfg.model_copy(update={"readout_skip": True}))
    skip.load_state_dict(plain.state_dict(), strict=False)
    a = ChipInstance.create("loihi", plain.cfg, seed=1)
    b = ChipInstance.create("loihi", skip.cfg, seed=1)
    for t_a, t_b in zip(a.threshold_scale, b.threshold_scale, strict=True):
        assert torch.equal(t_a, t_b)
    assert torch.equal(a.weight_gain["layers.0.weight"], b.weight_gain["layers.0.weight"])
    x = torch.rand(5, 4, 6)
    with torch.no_grad():
        out_a, out_b = plain(x, a), skip(x, b)
    assert torch.equal(out_a.outputs, out_b.outputs)
    assert out_a.telemetry.synaptic_ops == out_b.telemetry.synaptic_ops


def test_a_layer_written_for_the_first_time_gets_its_own_grid() -> None:
    p = ChipProfile(name="d", weight_bits=4)  # levels -7..7
    new = torch.tensor([[0.5, -1.4, 0.05]])
    stored = commit_update(torch.zeros(1, 3), new, p, torch.Generator().manual_seed(0))
    assert stored.weight.abs().max() == pytest.approx(1.4)
    assert (stored.weight - new).abs().max() <= 1.4 / 7 + 1e-6  # within one grid step
    # Rescaled on purpose: values beyond the old range are kept, not saturated.
    grown = commit_update(torch.full((1, 3), 0.1), new, p, rescale=True)
    assert grown.weight.abs().max() == pytest.approx(1.4)


def _recording(path: Path, seed: int = 0) -> np.ndarray:
    """Three classes in 12 channels, log-normal like a gas sensor's features."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, CHANNELS)) * SEPARATION
    y = np.repeat(np.arange(3), 60)
    x = np.exp(centres[y] + NOISE * rng.normal(size=(len(y), CHANNELS)))[:, :, None] * 100.0
    save_npz(path, x, y)
    return centres


@pytest.fixture(scope="module")
def rehearsal_bundle(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    return _train(tmp_path_factory.mktemp("rec") / "rec.npz")


def _train(path: Path) -> ModelBundle:
    _recording(path)
    cfg = TrainConfig(
        family="file",
        family_config={"path": str(path), "gain_step": 0.1, "offset_step": 0.05},
        profile="loihi",
        algorithm="prototype",
        scope="readout",
        hidden=(16,),
        n_steps=4,
        dt_s=0.005,
        tau_syn_inv=50.0,
        encoder="binned",
        encoder_config={"n_bins": 1, "hold_steps": 1},
        normalisation="feature",
        signed_log=True,
        episode_normalisation=True,
        iterations=20,
        meta_batch=2,
        k_shot=3,
        n_query=10,
        rehearsal=True,
    )
    tr = build_trainer(cfg)
    train_steps(tr, 20, progress=False)
    return finalise(tr, n_calibration=60)


def _drifted(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The recording's classes after sensor ageing: a gain per channel and class that
    no affine normalisation of the whole batch undoes."""
    rng = np.random.default_rng(100 + seed)
    centres = np.random.default_rng(0).normal(size=(3, CHANNELS)) * SEPARATION
    y = np.repeat(np.arange(3), 80)
    drift = rng.normal(size=(3, CHANNELS)) * CLASS_DRIFT + rng.normal(size=CHANNELS) * 1.5
    x = np.exp(centres[y] + drift[y] + NOISE * rng.normal(size=(len(y), CHANNELS)))
    return x[:, :, None] * 100.0, y


def test_the_prior_carries_its_source_rows_through_the_model_folder(
    tmp_path: Path, rehearsal_bundle: ModelBundle
) -> None:
    assert has_rehearsal(rehearsal_bundle)
    assert rehearsal_bundle.meta_tensors[REHEARSAL_X].shape == (180, CHANNELS, 1)
    rehearsal_bundle.save(tmp_path / "m")
    again = ModelBundle.load(tmp_path / "m")
    assert has_rehearsal(again)
    x, y = _drifted(0)
    served = {k: v.clone() for k, v in rehearsal_bundle.network.state_dict().items()}
    a, rep_a = adapt(rehearsal_bundle, x[:9], y[:9], ChipInstance.create("loihi", again.cfg, 2))
    b, rep_b = adapt(again, x[:9], y[:9], ChipInstance.create("loihi", again.cfg, 2))
    for k, v in a.network.state_dict().items():
        assert torch.equal(v, b.network.state_dict()[k]), k
    assert rep_a.weight_writes == rep_b.weight_writes > 0
    assert a.network.readout_skip is not None and bool(a.network.readout_skip.weight.any())
    # The served bundle is untouched: adaptation writes a clone.
    for k, v in rehearsal_bundle.network.state_dict().items():
        assert torch.equal(v, served[k]), k


def test_rehearsal_beats_the_shots_alone_and_no_adaptation(rehearsal_bundle: ModelBundle) -> None:
    """Three drifted environments, a few shots per class: the rehearsal readout against
    the same prior without its source rows (prototype readout), no adaptation and the
    logistic-regression peer on the shots alone, on the same shots and queries."""
    mean = _scores(rehearsal_bundle)
    assert mean["rehearsal"] >= mean["none"] + 0.3, mean
    assert mean["rehearsal"] >= mean["lr_scratch"] + 0.04, mean
    assert mean["rehearsal"] >= mean["prototype"] - 0.02, mean


def _scores(rehearsal_bundle: ModelBundle) -> dict[str, float]:
    fam_x = rehearsal_bundle.meta_tensors[REHEARSAL_X].numpy()
    fam_y = rehearsal_bundle.meta_tensors["rehearsal.y"].numpy()
    peers = Peers.fit(SourceData([(fam_x, fam_y)], 3, signed_log=True), seed=0, train_steps=200)
    plain = rehearsal_bundle.clone()
    del plain.meta_tensors[REHEARSAL_X]
    scores: dict[str, list[float]] = {}
    for env in range(3):
        x, y = _drifted(env)
        rng = np.random.default_rng(env)
        sup = np.concatenate(
            [rng.choice(np.flatnonzero(y == c), SHOTS, replace=False) for c in range(3)]
        )
        rest = np.setdiff1d(np.arange(len(y)), sup)
        for name, bundle in (("rehearsal", rehearsal_bundle), ("prototype", plain)):
            chip = ChipInstance.create("loihi", bundle.cfg, env)
            new, _ = adapt(bundle, x[sup], y[sup], chip)
            scores.setdefault(name, []).append(query_metric(new, chip, x[rest], y[rest]))
        chip = ChipInstance.create("loihi", plain.cfg, env)
        scores.setdefault("none", []).append(query_metric(rehearsal_bundle, chip, x[rest], y[rest]))
        scores.setdefault("lr_scratch", []).append(
            peers.score(x[sup], y[sup], x[rest], y[rest])["lr_scratch"]
        )
    return {k: float(np.mean(v)) for k, v in scores.items()}


def test_rehearsal_needs_a_file_family() -> None:
    with pytest.raises(ConfigError, match="rehearsal needs a file family"):
        build_trainer(TrainConfig(iterations=1, hidden=(8,), rehearsal=True))


@pytest.mark.parametrize("profile", ["ideal", "loihi"])
def test_skip_synapses_survive_the_nir_round_trip(tmp_path: Path, profile: str) -> None:
    net = _skip_net(seed=4)
    chip = ChipInstance.create(profile, net.cfg, seed=2)
    graph = to_nir(net, chip)
    assert ("input", "readout_skip") in graph.edges
    assert ("readout_skip", "readout_li") in graph.edges
    back = load_nir(export_nir(net, tmp_path / "skip.nir", chip))
    for name, w in net.effective_weights(chip).items():
        assert torch.equal(back.effective_weights(None)[name], w), name
    if profile == "ideal":
        x = torch.rand(5, 4, 6)
        with torch.no_grad():
            want = net(x, ChipInstance.create("ideal", net.cfg))
            assert torch.equal(back(x).outputs, want.outputs)


def test_the_pooled_frame_measured_in_design_runs_and_differs(
    rehearsal_bundle: ModelBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The alternative the sixth design round measured (source rows under the shots'
    normaliser, standardised on the pool) still adapts, and is not the shipped fit."""
    import functools

    import regulator.meta.adapt as adapt_module
    from regulator.meta.rehearsal import rehearsal_readout

    x, y = _drifted(1)
    rng = np.random.default_rng(1)
    sup = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), SHOTS, replace=False) for c in range(3)]
    )
    rest = np.setdiff1d(np.arange(len(y)), sup)
    chip = ChipInstance.create("loihi", rehearsal_bundle.cfg, 1)
    own, _ = adapt(rehearsal_bundle, x[sup], y[sup], chip)
    pooled_fit = functools.partial(rehearsal_readout, source_frame="shots", standardise_on="pool")
    monkeypatch.setattr(adapt_module, "rehearsal_readout", pooled_fit)
    chip = ChipInstance.create("loihi", rehearsal_bundle.cfg, 1)
    pooled, _ = adapt(rehearsal_bundle, x[sup], y[sup], chip)
    assert own.network.readout_skip is not None and pooled.network.readout_skip is not None
    assert not torch.equal(own.network.readout_skip.weight, pooled.network.readout_skip.weight)
    none = query_metric(
        rehearsal_bundle, ChipInstance.create("loihi", rehearsal_bundle.cfg, 1), x[rest], y[rest]
    )
    assert query_metric(pooled, chip, x[rest], y[rest]) >= none + 0.2
