"""Meta-learning on tiny configurations (seconds each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from regulator.chip.network import ChipInstance
from regulator.chip.quant import weight_levels
from regulator.errors import (
    ChecksumError,
    DataFormatError,
    NotEnoughSamplesError,
    UnknownNameError,
)
from regulator.meta.adapt import adapt
from regulator.meta.evaluate import evaluate
from regulator.meta.gas_protocol import evaluate_gas_drift
from regulator.meta.labelfree import recalibrate_label_free
from regulator.meta.model import ModelBundle
from regulator.meta.plasticity import pre_trace, three_factor_update
from regulator.meta.recipes import run_recipe
from regulator.meta.train import (
    TrainConfig,
    build_trainer,
    finalise,
    load_checkpoint,
    save_checkpoint,
    train_steps,
)
from regulator.tasks.formats import save_npz

TINY = dict(hidden=(16,), n_steps=8, meta_batch=2, k_shot=2, n_query=10, inner_steps=3)


@pytest.fixture(scope="module")
def tiny_bundle() -> ModelBundle:
    cfg = TrainConfig(iterations=3, **TINY)
    tr = build_trainer(cfg)
    train_steps(tr, 3, progress=False)
    return finalise(tr, n_calibration=40)


def _episode(bundle: ModelBundle, k: int = 2, seed: int = 0):
    from regulator.meta.evaluate import family_for

    fam = family_for(bundle)
    rng = np.random.default_rng(seed)
    return fam.episode(fam.environment_from_seed(7), k, 10, rng)


def test_meta_training_lowers_meta_loss() -> None:
    cfg = TrainConfig(iterations=40, outer_lr=1e-2, **{**TINY, "meta_batch": 4})
    tr = build_trainer(cfg)
    train_steps(tr, 40, progress=False)
    assert tr.history is not None
    first = np.mean([h["loss"] for h in tr.history[:8]])
    last = np.mean([h["loss"] for h in tr.history[-8:]])
    assert last < first


def test_inner_loop_never_changes_the_original(tiny_bundle: ModelBundle) -> None:
    before = {k: v.clone() for k, v in tiny_bundle.network.state_dict().items()}
    norm = tiny_bundle.normaliser.to_dict()
    ep = _episode(tiny_bundle)
    chip = ChipInstance.create(tiny_bundle.profile, tiny_bundle.cfg, 0)
    new, rep = adapt(tiny_bundle, ep.support_x, ep.support_y, chip)
    recal, _ = recalibrate_label_free(tiny_bundle, ep.query_x * 2.0 + 1.0, chip)
    for k, v in tiny_bundle.network.state_dict().items():
        assert torch.equal(v, before[k])
    assert tiny_bundle.normaliser.to_dict() == norm
    assert rep.weight_writes > 0
    assert not torch.equal(new.network.readout.weight, tiny_bundle.network.readout.weight)
    assert recal.normaliser.to_dict() != norm


def test_quantised_inner_loop_stays_on_grid(tiny_bundle: ModelBundle) -> None:
    assert tiny_bundle.profile.weight_bits == 8
    ep = _episode(tiny_bundle)
    chip = ChipInstance.create(tiny_bundle.profile, tiny_bundle.cfg, 1)
    old = tiny_bundle.network.readout.weight.detach()
    new, _ = adapt(tiny_bundle, ep.support_x, ep.support_y, chip, steps=4)
    step = old.abs().max() / weight_levels(8)
    levels = new.network.readout.weight.detach() / step
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert levels.abs().max() <= weight_levels(8) + 1e-4


def test_plasticity_reads_only_local_signals() -> None:
    gen = torch.Generator().manual_seed(0)
    spikes = (torch.rand(8, 3, 5, generator=gen) < 0.3).float()  # [T, B, H]
    post = torch.rand(3, 4, generator=gen)
    mod = torch.randn(3, 4, generator=gen)
    coefs = {
        "log_lr": torch.tensor(-1.0),
        "coef_mod": torch.tensor(0.7),
        "coef_hebb": torch.tensor(0.3),
        "coef_bias": torch.tensor(1.0),
    }
    pre = pre_trace(spikes, torch.tensor(0.8))
    dw, _ = three_factor_update(pre, post, mod, coefs)
    i, j = 1, 2
    # Perturb every non-local input of synapse (i, j): other pre-synaptic neurons'
    # spikes, other output neurons' activity and modulators.
    spikes2 = spikes.clone()
    cols = [h for h in range(5) if h != j]
    spikes2[:, :, cols] = 1.0 - spikes2[:, :, cols]
    post2, mod2 = post.clone(), mod.clone()
    others = [k for k in range(4) if k != i]
    post2[:, others] = torch.rand(3, 3, generator=gen)
    mod2[:, others] = torch.randn(3, 3, generator=gen)
    dw2, _ = three_factor_update(pre_trace(spikes2, torch.tensor(0.8)), post2, mod2, coefs)
    assert torch.equal(dw[i, j], dw2[i, j])
    # The global modulator does matter.
    mod3 = mod.clone()
    mod3[:, i] += 1.0
    dw3, _ = three_factor_update(pre, post, mod3, coefs)
    assert not torch.equal(dw[i, j], dw3[i, j])


def test_evaluation_is_reproducible(tiny_bundle: ModelBundle) -> None:
    kw = dict(ks=(1,), n_tasks=2, n_query=10, seed=3, baseline_steps=2)
    a = evaluate(tiny_bundle, **kw)
    b = evaluate(tiny_bundle, **kw)
    drop = ("seconds",)

    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in drop}
        return o

    assert json.dumps(strip(a), sort_keys=True) == json.dumps(strip(b), sort_keys=True)
    assert set(a["table"]["1"]) >= {"meta", "scratch", "no_adaptation"}


def test_k_larger_than_available_samples(tmp_path: Path, tiny_bundle: ModelBundle) -> None:
    from regulator.tasks.file_family import FileFamily

    p = tmp_path / "rec.npz"
    rng = np.random.default_rng(0)
    save_npz(p, rng.normal(size=(6, 8, 32)), np.array([0, 1, 2, 3, 4, 0]))
    with pytest.raises(NotEnoughSamplesError, match="K=5"):
        evaluate(tiny_bundle, FileFamily(str(p)), ks=(5,), n_tasks=2)


def test_gas_drift_k_too_large(tmp_path: Path, tiny_bundle: ModelBundle) -> None:
    lines = "\n".join(f"{1 + i % 2};10.0 1:{i}.0 2:1.0" for i in range(6))
    for b in (1, 2):
        (tmp_path / f"batch{b}.dat").write_text(lines + "\n")
    with pytest.raises(NotEnoughSamplesError, match="gas 1 has 3"):
        evaluate_gas_drift(tiny_bundle, tmp_path, k_per_class=5, batches=(2,))


def test_unknown_algorithm_and_recipe(tiny_bundle: ModelBundle) -> None:
    with pytest.raises(UnknownNameError, match=r"valid: fomaml"):
        build_trainer(TrainConfig(algorithm="sgd", **TINY))
    bad = tiny_bundle.clone()
    bad.meta["algorithm"] = "hebb"
    with pytest.raises(UnknownNameError, match="hebb"):
        evaluate(bad, ks=(1,), n_tasks=2)
    with pytest.raises(UnknownNameError, match="recipe"):
        run_recipe("nope", "/nonexistent")


def test_model_folder_round_trip_and_checksum(tmp_path: Path, tiny_bundle: ModelBundle) -> None:
    folder = tiny_bundle.save(tmp_path / "m")
    loaded = ModelBundle.load(folder)
    for k, v in tiny_bundle.network.state_dict().items():
        assert torch.equal(v, loaded.network.state_dict()[k])
    assert loaded.calibration == tiny_bundle.calibration
    assert loaded.meta == json.loads(json.dumps(tiny_bundle.meta))
    x = _episode(tiny_bundle).query_x
    p1 = ChipInstance.create(tiny_bundle.profile, tiny_bundle.cfg, 0)
    p2 = ChipInstance.create(loaded.profile, loaded.cfg, 0)
    from regulator.meta.model import ChipModel

    assert np.array_equal(
        ChipModel(tiny_bundle, chip=p1).predict(x).outputs,
        ChipModel(loaded, chip=p2).predict(x).outputs,
    )
    raw = bytearray((folder / "weights.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (folder / "weights.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match=r"weights\.safetensors"):
        ModelBundle.load(folder)


def test_resume_continues_identically(tmp_path: Path) -> None:
    cfg = TrainConfig(iterations=4, **TINY)
    a = build_trainer(cfg)
    train_steps(a, 4, progress=False)
    b = build_trainer(cfg)
    train_steps(b, 2, progress=False)
    save_checkpoint(b, tmp_path)
    c = load_checkpoint(tmp_path)
    train_steps(c, 2, progress=False)
    assert a.history is not None and c.history is not None
    assert [h["loss"] for h in a.history] == pytest.approx([h["loss"] for h in c.history], rel=1e-5)
    for k, v in a.bundle.network.state_dict().items():
        assert torch.allclose(v, c.bundle.network.state_dict()[k], atol=1e-6)


def test_label_free_restores_density(tiny_bundle: ModelBundle) -> None:
    ep = _episode(tiny_bundle, k=8)
    x = np.concatenate([ep.support_x, ep.query_x])
    chip = ChipInstance.create(tiny_bundle.profile, tiny_bundle.cfg, 0)
    _, probe = recalibrate_label_free(tiny_bundle, x, chip, homeostasis=False)
    # A baseline well above the present density, so homeostasis must raise the bias.
    b = tiny_bundle.clone()
    b.calibration["spike_density"] = [2.0 * v + 0.05 for v in probe.density_before]
    chip = ChipInstance.create(tiny_bundle.profile, tiny_bundle.cfg, 0)
    _, rep = recalibrate_label_free(b, x, chip)
    tgt = rep.density_target[0]
    assert abs(rep.density_after[0] - tgt) < abs(rep.density_before[0] - tgt)
    assert rep.bias_shift[0] > 0 and rep.weight_writes == b.cfg.hidden[0]
    assert rep.learning_energy_j > 0


# -- the input scope: a per-channel gain and offset folded into layer 0, plus the readout


@pytest.fixture(scope="module")
def input_bundle() -> ModelBundle:
    cfg = TrainConfig(scope="input", iterations=2, pretrain_steps=1, **TINY)
    tr = build_trainer(cfg)
    train_steps(tr, 3, progress=False)
    assert tr.history is not None and tr.history[0].get("phase") == "pretrain"
    return finalise(tr, n_calibration=40)


def test_input_scope_has_learned_rates(input_bundle: ModelBundle) -> None:
    assert input_bundle.meta["scope"] == "input"
    assert {"lr.input.gain", "lr.input.offset", "lr.readout.weight"} <= set(
        input_bundle.meta_tensors
    )


def test_fold_input_equals_transformed_input() -> None:
    from regulator.chip.network import NetworkConfig, SpikingNetwork
    from regulator.meta.adapt import fold_input, input_start

    net = SpikingNetwork(NetworkConfig(n_inputs=3, hidden=(6,), n_outputs=2, n_steps=5))
    p = input_start(net)
    p["input.gain"] = torch.tensor([0.5, 2.0, 1.5])
    p["input.offset"] = torch.tensor([0.3, -0.2, 0.0])
    x = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(0))
    base = {k: v.detach() for k, v in net.named_parameters()}
    folded = fold_input(base, p)
    with torch.no_grad():
        want = net(x * p["input.gain"] + p["input.offset"]).outputs
        got = torch.func.functional_call(net, folded, (x,)).outputs
    assert torch.allclose(got, want, atol=1e-5)


def test_input_scope_never_changes_the_original(input_bundle: ModelBundle) -> None:
    before = {k: v.clone() for k, v in input_bundle.network.state_dict().items()}
    meta_before = {k: v.clone() for k, v in input_bundle.meta_tensors.items()}
    ep = _episode(input_bundle)
    chip = ChipInstance.create(input_bundle.profile, input_bundle.cfg, 0)
    new, rep = adapt(input_bundle, ep.support_x, ep.support_y, chip)
    for k, v in input_bundle.network.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in input_bundle.meta_tensors.items():
        assert torch.equal(v, meta_before[k]), k
    assert rep.scope == "input" and rep.weight_writes > 0
    assert rep.support_forwards == input_bundle.meta["inner_steps"] + 1
    assert not torch.equal(new.network.layers[0].weight, input_bundle.network.layers[0].weight)
    # Only layer 0 and the readout are written.
    for k, v in new.network.state_dict().items():
        if not k.startswith(("layers.0.", "readout.")):
            assert torch.equal(v, before[k]), k


def test_input_scope_writes_stay_on_grid(input_bundle: ModelBundle) -> None:
    ep = _episode(input_bundle)
    chip = ChipInstance.create(input_bundle.profile, input_bundle.cfg, 1)
    new, _ = adapt(input_bundle, ep.support_x, ep.support_y, chip, steps=4)
    for name in ("layers.0.weight", "readout.weight"):
        old = input_bundle.network.state_dict()[name]
        step = old.abs().max() / weight_levels(8)
        levels = new.network.state_dict()[name] / step
        assert torch.allclose(levels, levels.round(), atol=1e-4), name
        assert levels.abs().max() <= weight_levels(8) + 1e-4, name


def test_input_scope_event_driven_and_baseline_scope(input_bundle: ModelBundle) -> None:
    ep = _episode(input_bundle)
    chip = ChipInstance.create(input_bundle.profile, input_bundle.cfg, 2)
    _, rep = adapt(input_bundle, ep.support_x, ep.support_y, chip, event_threshold=0.99)
    assert rep.skipped_updates > 0
    res = evaluate(input_bundle, ks=(1,), n_tasks=2, n_query=10, seed=1, baseline_steps=2)
    assert res["baseline_scope"] == "input"


def test_input_scope_rejects_local_rules() -> None:
    from regulator.errors import ConfigError

    with pytest.raises(ConfigError, match="input"):
        build_trainer(TrainConfig(scope="input", algorithm="plasticity", **TINY))


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metasgd", "reptile"])
def test_every_algorithm_meta_trains_every_parameter(algorithm: str) -> None:
    """Scope 'all': the inner loop adapts every parameter (BPTT through the support
    forward); meta-training moves the body, and deployment adapts a clone."""
    from regulator.meta.train import TrainConfig, build_trainer, train_steps

    cfg = TrainConfig(
        iterations=2,
        meta_batch=2,
        hidden=(8,),
        n_steps=6,
        k_shot=2,
        n_query=5,
        inner_steps=1,
        scope="all",
        algorithm=algorithm,
    )
    tr = build_trainer(cfg)
    before = {k: v.detach().clone() for k, v in tr.bundle.network.named_parameters()}
    train_steps(tr, 2, progress=False)
    moved = [k for k, v in tr.bundle.network.named_parameters() if not torch.equal(v, before[k])]
    assert "layers.0.weight" in moved and "readout.weight" in moved
    fam = tr.family
    x, y = fam.sample(
        fam.nominal_environment(),
        10,
        np.random.default_rng(0),
        classes=np.repeat(np.arange(fam.n_outputs), 2),
    )
    original = {k: v.detach().clone() for k, v in tr.bundle.network.named_parameters()}
    chip = ChipInstance.create(tr.bundle.profile, tr.bundle.cfg, 0)
    _, report = adapt(tr.bundle, x, y, chip)
    assert report.scope == "all" and report.weight_writes > 0
    for k, v in tr.bundle.network.named_parameters():  # the original is never changed
        assert torch.equal(v, original[k])


def test_gas_drift_gas_beyond_the_prior_is_refused(
    tmp_path: Path, tiny_bundle: ModelBundle
) -> None:
    n = tiny_bundle.cfg.n_outputs
    lines = "\n".join(f"{1 + i % 2};10.0 1:{i}.0 2:1.0" for i in range(12))
    (tmp_path / "batch1.dat").write_text(lines + "\n")
    (tmp_path / "batch6.dat").write_text(lines + f"\n{n + 1};10.0 1:1.0 2:1.0\n")
    with pytest.raises(DataFormatError, match=f"batch 6: gas {n + 1} found"):
        evaluate_gas_drift(tiny_bundle, tmp_path, k_per_class=2, batches=(6,))
