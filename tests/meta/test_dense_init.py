"""The body converted from a dense ReLU layer: what is written, what training keeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from regulator.errors import ConfigError
from regulator.meta.dense_init import input_lines
from regulator.meta.train import TrainConfig, build_trainer, train_steps
from tests.meta.test_proto import PROTO


def _cfg(**change: object) -> TrainConfig:
    base = {**PROTO, "body_init": "dense", "body_init_steps": 200, "body_init_groups": 4}
    return TrainConfig(**{**base, **change})


def test_converted_layer_is_the_scaled_dense_layer_and_separates_the_classes() -> None:
    tr1 = build_trainer(_cfg(body_init_scale=1.0))
    tr4 = build_trainer(_cfg(body_init_scale=4.0))
    w1 = tr1.bundle.network.layers[0].weight.detach()
    w4 = tr4.bundle.network.layers[0].weight.detach()
    # Same data and seed: only the scale differs.
    torch.testing.assert_close(w4, 4.0 * w1)
    init = tr1.bundle.meta["body_init"]
    assert init["units"] == 16 and init["n_samples"] == 5 * 64
    # The dense layer learned the source task well beyond chance (3 classes: 1/3).
    assert init["train_accuracy"] > 0.5
    random_w = build_trainer(TrainConfig(**PROTO)).bundle.network.layers[0].weight
    assert not torch.allclose(w1, random_w.detach())


def test_partial_conversion_leaves_the_other_neurons_and_training_keeps_the_converted() -> None:
    plain = build_trainer(TrainConfig(**{**PROTO, "hidden": (16,)}))
    tr = build_trainer(_cfg(body_init_units=6, iterations=5))
    w0 = tr.bundle.network.layers[0].weight.detach().clone()
    torch.testing.assert_close(w0[6:], plain.bundle.network.layers[0].weight.detach()[6:])
    train_steps(tr, 5, progress=False)
    w1 = tr.bundle.network.layers[0].weight.detach()
    torch.testing.assert_close(w1[:6], w0[:6])  # converted rows kept
    assert not torch.allclose(w1[6:], w0[6:])  # the rest meta-trained


def test_frozen_body_trains_only_the_readout_prior() -> None:
    tr = build_trainer(_cfg(train_body=False, iterations=5))
    before = {k: v.detach().clone() for k, v in tr.bundle.network.named_parameters()}
    prior0 = tr.bundle.meta_tensors["proto.prior"].detach().clone()
    train_steps(tr, 5, progress=False)
    for k, v in tr.bundle.network.named_parameters():
        if k.startswith("layers."):
            torch.testing.assert_close(v.detach(), before[k])
    assert not torch.allclose(tr.bundle.meta_tensors["proto.prior"].detach(), prior0)


def test_input_lines_sum_the_encoded_current() -> None:
    tr = build_trainer(TrainConfig(**PROTO))
    x = np.random.default_rng(0).standard_normal((5, 4, 8)).astype(np.float32)
    lines = input_lines(tr.bundle, x, normalise_on_self=True)
    enc = tr.bundle.encode(x, None, normaliser=tr.bundle.support_normaliser(x))
    torch.testing.assert_close(lines, enc.sum(0))


@pytest.mark.parametrize(
    ("change", "needle"),
    [({"hidden": (8, 8)}, "one feed-forward hidden layer"), ({"body_init_units": 40}, "1..16")],
)
def test_bad_conversion_settings_are_refused(change: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        build_trainer(_cfg(**change))
