"""The drift explanation's arithmetic: exact layer shares, channel groups, rankings."""

from __future__ import annotations

import numpy as np
import pytest

from regulator.errors import InputError
from regulator.monitor.explain import channel_groups, explain_channels, explain_layers
from regulator.monitor.ood import MahalanobisScorer


def test_groups_cover_every_channel_once() -> None:
    for n in (1, 8, 16, 17, 128):
        groups = channel_groups(n)
        flat = [c for g in groups for c in g.channels]
        assert flat == list(range(n)) and len(groups) <= 16
    assert [g.name for g in channel_groups(128)][:2] == ["0-7", "8-15"]  # 16 sensors x 8
    with pytest.raises(InputError):
        channel_groups(0)


def test_layer_shares_are_an_exact_split_of_the_score() -> None:
    rng = np.random.default_rng(0)
    ref = rng.poisson(3.0, size=(500, 12)).astype(float)
    sc = MahalanobisScorer().fit(ref)
    window = rng.poisson(3.0, size=(32, 12)).astype(float)
    window[:, 8:] += 4.0  # the second layer (neurons 8..11) fires more
    terms = sc.contributions(window)
    assert np.allclose(terms.sum(axis=1), sc.score(window))
    layers = explain_layers(terms, window, sc.mean, [("hidden0", 8), ("hidden1", 4)])
    assert [la.layer for la in layers] == ["hidden1", "hidden0"]
    assert sum(la.ood_share for la in layers) == pytest.approx(1.0)
    assert layers[0].ood_share > 0.6  # ~25 of ~33: the unmoved 8 neurons still add ~8
    assert layers[0].spike_change == pytest.approx(4.0 / 3.0, rel=0.15)  # +4 on ~3 spikes
    with pytest.raises(InputError, match="add up"):
        explain_layers(terms, window, sc.mean, [("hidden0", 8)])


def test_without_a_score_channels_rank_by_shift() -> None:
    z = np.zeros((10, 5, 3))
    z[:, 3] = -2.0
    z[:, 1] = 0.5
    out = explain_channels(z, z, None, channel_groups(5), None)
    assert [c.name for c in out[:2]] == ["3", "1"] and out[0].ood_share is None
    assert out[0].shift == pytest.approx(-2.0)
