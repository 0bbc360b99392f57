"""Drift explanation with a per-feature (channel x time) normaliser centre."""

from __future__ import annotations

import numpy as np

from regulator.monitor.explain import ChannelGroup, explain_channels


def test_per_feature_centre_occludes_each_time_point() -> None:
    rng = np.random.default_rng(0)
    centre = rng.standard_normal((3, 4))  # [C, L], as normalisation "feature" stores it
    x = np.repeat(centre[None], 6, axis=0) + 0.01 * rng.standard_normal((6, 3, 4))
    x[:, 1, :] += 5.0  # channel 1 moved
    seen: list[np.ndarray] = []

    def score(batch: np.ndarray) -> np.ndarray:
        seen.append(batch)
        return np.abs(batch - centre[None]).sum(axis=(1, 2))

    groups = [ChannelGroup(str(i), (i,)) for i in range(3)]
    out = explain_channels(x, x - centre[None], centre, groups, score)
    assert out[0].name == "1" and out[0].ood_share is not None and out[0].ood_share > 0.9
    occluded = seen[0].reshape(4, 6, 3, 4)[2]  # the window with channel 1 put back
    assert np.allclose(occluded[:, 1, :], centre[1])
