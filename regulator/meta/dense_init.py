"""The spiking body's first layer converted from a dense ReLU layer (ANN-to-SNN start).

Why: on the gas-drift recordings, a hidden layer learned by surrogate gradients through
four spiking steps separates the gases of a later batch far worse than a dense ReLU layer
trained on the same source data (logistic regression on the hidden features of batch 4:
85% against 96%; ``bench/results/learner_design.md``). So the body starts from the dense
layer: it is trained with cross-entropy on the encoder's input lines (the current each
line delivers over the presentation, i.e. what the first spiking layer integrates) of
samples from many training environments, each environment normalised on its own samples
as episodic training does; its weights and biases, times ``scale``, become the first
spiking layer. A hidden neuron then fires when its ReLU unit's drive clears the
threshold: a binarised ReLU feature, which keeps what the dense layer separates.
Meta-training then runs as before, with the chip's quantisation and noise in the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from regulator.errors import ConfigError
from regulator.meta.model import ModelBundle
from regulator.tasks.base import TaskFamily


@dataclass(frozen=True)
class DenseInit:
    """What the conversion did: the dense layer's training accuracy on its own data."""

    steps: int
    scale: float
    units: int
    n_samples: int
    train_accuracy: float


def _first_layer(bundle: ModelBundle) -> nn.Linear:
    first = bundle.network.layers[0]
    assert isinstance(first, nn.Linear)
    return first


def input_lines(bundle: ModelBundle, x: np.ndarray, normalise_on_self: bool) -> torch.Tensor:
    """``[B, n_in]``: the summed input current per line for samples ``x`` (one group)."""
    norm = bundle.support_normaliser(x) if normalise_on_self else None
    return bundle.encode(x, None, normaliser=norm).sum(0)


def _source(
    bundle: ModelBundle,
    family: TaskFamily,
    rng: np.random.Generator,
    groups: int,
    per_group: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    envs = [family.nominal_environment()]
    envs += [family.sample_environment(rng) for _ in range(groups)]
    feats, labels = [], []
    for env in envs:
        x, y = family.sample(env, per_group, rng)
        feats.append(input_lines(bundle, x, bundle.episode_normalisation))
        labels.append(torch.as_tensor(y, dtype=torch.long))
    return torch.cat(feats), torch.cat(labels)


def init_from_dense(
    bundle: ModelBundle,
    family: TaskFamily,
    rng: np.random.Generator,
    steps: int,
    scale: float,
    seed: int,
    groups: int = 32,
    per_group: int = 64,
    units: int | None = None,
) -> DenseInit:
    """Train the dense layer and write it, scaled, into the bundle's first layer.

    Its data: ``per_group`` samples of the nominal environment and of each of ``groups``
    sampled training environments. ``units``: how many of the first hidden neurons are
    converted (default all); the others keep their initialisation."""
    if len(bundle.cfg.hidden) != 1 or bundle.cfg.recurrent:
        raise ConfigError("body_init 'dense' needs one feed-forward hidden layer")
    if family.kind != "classification":
        raise ConfigError("body_init 'dense' trains a classifier: classification families only")
    with torch.no_grad():
        x, y = _source(bundle, family, rng, groups, per_group)
    torch.manual_seed(seed)
    n_hidden = bundle.cfg.hidden[0] if units is None else units
    if not 0 < n_hidden <= bundle.cfg.hidden[0]:
        raise ConfigError(f"body_init_units must lie in 1..{bundle.cfg.hidden[0]}, got {n_hidden}")
    hidden = nn.Linear(x.shape[1], n_hidden)
    dense = nn.Sequential(hidden, nn.ReLU(), nn.Linear(n_hidden, family.n_outputs))
    opt = torch.optim.Adam(dense.parameters(), lr=3e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(128, len(x)),), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(dense(x[idx]), y[idx]).backward()
        opt.step()
    with torch.no_grad():
        acc = float((dense(x).argmax(1) == y).float().mean())
        first = _first_layer(bundle)
        first.weight[:n_hidden] = scale * hidden.weight
        first.bias[:n_hidden] = scale * hidden.bias
    return DenseInit(steps=steps, scale=scale, units=n_hidden, n_samples=len(x), train_accuracy=acc)


def keep_converted(bundle: ModelBundle, units: int) -> None:
    """Meta-training leaves the first ``units`` neurons as converted: their rows of the
    first layer get no gradient (it would trade their transfer for the training drift)."""
    first = _first_layer(bundle)
    mask = torch.ones(first.weight.shape[0], 1)
    mask[:units] = 0.0
    first.weight.register_hook(lambda g: g * mask)
    first.bias.register_hook(lambda g: g * mask[:, 0])
