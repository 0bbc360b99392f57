"""Explaining a drift alarm: which input channels and which hidden layers moved, and how
much of the OOD score each accounts for.

Computed over a window of the most recent samples (when a detection starts an episode):

- **layers**: the Mahalanobis OOD score of a sample is ``d^T P d`` with ``d`` its hidden
  spike counts minus the in-distribution mean; it splits exactly into one term per
  neuron, ``d_i (P d)_i``, and so into one share per hidden layer (the shares of the
  window's mean score add up to 1). A layer's ``spike_change`` is the relative change
  of its total spike count against the in-distribution mean.
- **input channels**: ``shift`` is the window's mean of the channel's normalised input
  (the model's normaliser maps the in-distribution inputs to centre 0, scale 1, so this
  is in in-distribution scales); ``ood_share`` is the channel's share of the OOD score by
  occlusion: the drop of the window's mean score when that channel (or group of
  channels, for wide inputs) is set back to its in-distribution centre, over the sum of
  the positive drops. A shift of one sensor ranks that sensor first.

Pure computation: the caller hands in the scoring function (raw inputs to OOD scores),
so this module runs no chip itself.

>>> import numpy as np
>>> groups = channel_groups(4, max_groups=2)
>>> [(g.name, g.channels) for g in groups]
[('0-1', (0, 1)), ('2-3', (2, 3))]
>>> z = np.zeros((8, 4, 1)); z[:, 2] = 3.0          # channel 2 moved by 3 scales
>>> score = lambda x: (x[:, :, 0] ** 2).sum(axis=1)  # a toy OOD score on raw inputs
>>> ex = explain_channels(z, z, np.zeros(4), channel_groups(4), score)
>>> [(c.name, round(c.shift, 1), round(c.ood_share, 2)) for c in ex[:2]]
[('2', 3.0, 1.0), ('0', 0.0, 0.0)]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from regulator.errors import InputError

__all__ = [
    "ChannelDrift",
    "ChannelGroup",
    "DriftExplanation",
    "LayerDrift",
    "channel_groups",
    "explain_channels",
    "explain_layers",
]

MAX_GROUPS = 16
"""Most input groups occluded one by one (wider inputs are grouped contiguously: the
gas-drift model's 128 features become its 16 sensors of 8 features)."""


@dataclass(frozen=True)
class ChannelGroup:
    """One input channel, or a contiguous group of them; ``name`` is its index (``"3"``)
    or index range (``"24-31"``), the ``input`` label of the drift metrics."""

    name: str
    channels: tuple[int, ...]


@dataclass(frozen=True)
class ChannelDrift:
    """How far an input group moved (in-distribution scales, signed mean over the
    group) and its share of the OOD score (0..1, by occlusion; None when not computed)."""

    name: str
    shift: float
    ood_share: float | None


@dataclass(frozen=True)
class LayerDrift:
    """A hidden layer's share of the OOD score (0..1; slightly negative when the layer
    moved towards its in-distribution mean) and the relative change of its spike count
    (``0.35``: it fires 35% more than in distribution)."""

    layer: str
    ood_share: float
    spike_change: float


@dataclass(frozen=True)
class DriftExplanation:
    """What moved at a detection, ranked (largest share first); JSON with ``to_dict``."""

    sample: int
    window: int
    mean_score: float | None
    channels: tuple[ChannelDrift, ...]
    layers: tuple[LayerDrift, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def top_channel(self) -> str | None:
        return self.channels[0].name if self.channels else None


def channel_groups(n_channels: int, max_groups: int = MAX_GROUPS) -> list[ChannelGroup]:
    """``n_channels`` inputs as at most ``max_groups`` contiguous, equal groups."""
    if n_channels < 1 or max_groups < 1:
        raise InputError("channel_groups needs at least one channel and one group")
    size = -(-n_channels // max_groups)  # ceil
    out = []
    for start in range(0, n_channels, size):
        idx = tuple(range(start, min(start + size, n_channels)))
        name = str(idx[0]) if len(idx) == 1 else f"{idx[0]}-{idx[-1]}"
        out.append(ChannelGroup(name, idx))
    return out


def explain_channels(
    x: np.ndarray,
    z: np.ndarray,
    centre: np.ndarray | None,
    groups: Sequence[ChannelGroup],
    score: Callable[[np.ndarray], np.ndarray] | None,
) -> list[ChannelDrift]:
    """Rank input groups of the window ``x [W, C, L]`` (raw) and ``z`` (normalised).

    ``centre [C]`` or ``[C, L]`` is the raw in-distribution centre that occlusion puts
    back; ``score`` maps raw inputs ``[n, C, L]`` to OOD scores. Without either, shares are None and
    the ranking is by ``|shift|``. One call of ``score`` on ``len(groups) + 1`` windows.
    """
    if x.ndim != 3 or z.shape != x.shape:
        raise InputError(f"expected raw and normalised windows [W, C, L], got {x.shape}")
    shifts = [float(z[:, list(g.channels), :].mean()) for g in groups]
    shares: list[float | None] = [None] * len(groups)
    if centre is not None and score is not None:
        w = len(x)
        batch = np.repeat(x[None], len(groups) + 1, axis=0)  # [G+1, W, C, L]; 0 = as is
        # A per-channel centre [C] holds for every time point; a per-feature one
        # [C, L] (normalisation "feature") has its own value at each.
        c = np.asarray(centre)
        c = c[:, None] if c.ndim == 1 else c
        for k, g in enumerate(groups, start=1):
            batch[k][:, list(g.channels), :] = c[list(g.channels)]
        s = np.asarray(score(batch.reshape(-1, *x.shape[1:])), dtype=np.float64)
        means = s.reshape(len(groups) + 1, w).mean(axis=1)
        drops = np.maximum(means[0] - means[1:], 0.0)
        total = float(drops.sum())
        shares = [float(d / total) if total > 0 else 0.0 for d in drops]
    out = [ChannelDrift(g.name, sh, sr) for g, sh, sr in zip(groups, shifts, shares, strict=True)]
    key = (lambda c: (-(c.ood_share or 0.0), -abs(c.shift))) if shares[0] is not None else None
    return sorted(out, key=key or (lambda c: -abs(c.shift)))


def explain_layers(
    contributions: np.ndarray,
    hidden: np.ndarray,
    mean: np.ndarray,
    layers: Sequence[tuple[str, int]],
) -> list[LayerDrift]:
    """Rank hidden layers from per-neuron score terms ``contributions [W, H]`` (they add
    up to each sample's score), the window's spike counts ``hidden [W, H]`` and their
    in-distribution ``mean [H]``; ``layers`` are (name, neurons) in the network's order."""
    if sum(n for _, n in layers) != contributions.shape[1]:
        raise InputError("layer sizes do not add up to the hidden width")
    per_neuron = contributions.mean(axis=0)
    total = float(per_neuron.sum())
    now = hidden.mean(axis=0)
    out, start = [], 0
    for name, n in layers:
        sl = slice(start, start + n)
        share = float(per_neuron[sl].sum() / total) if total > 0 else 0.0
        ref = float(mean[sl].sum())
        change = float(now[sl].sum() / ref - 1.0) if ref > 0 else 0.0
        out.append(LayerDrift(name, share, change))
        start += n
    return sorted(out, key=lambda layer: -layer.ood_share)
