from __future__ import annotations

import json

import numpy as np
import pytest

from regulator.errors import ConfigError, InputError
from regulator.tasks.normalisation import Normaliser


def data(rng: np.random.Generator, gain: float = 1.0, offset: float = 0.0) -> np.ndarray:
    base = rng.normal([[1.0], [100.0], [-5.0]], [[1.0], [20.0], [0.1]], size=(500, 3, 4))
    return (gain * base + offset).astype(np.float32)


@pytest.mark.parametrize("method", ["standard", "robust"])
def test_fit_centres_and_scales_each_channel(method: str) -> None:
    z = Normaliser(method).fit_transform(data(np.random.default_rng(0)))  # type: ignore[arg-type]
    np.testing.assert_allclose(np.median(z, axis=(0, 2)), 0.0, atol=0.1)
    np.testing.assert_allclose(z.std(axis=(0, 2)), 1.0, atol=0.1)


def test_round_trip_through_json() -> None:
    norm = Normaliser("robust", signed_log=True).fit(data(np.random.default_rng(0)))
    again = Normaliser.from_dict(json.loads(json.dumps(norm.to_dict())))
    x = data(np.random.default_rng(1))
    np.testing.assert_array_equal(norm.transform(x), again.transform(x))


def test_label_free_refit_undoes_gain_and_offset_drift() -> None:
    rng = np.random.default_rng(0)
    norm = Normaliser("standard").fit(data(rng))
    drifted = data(rng, gain=3.0, offset=7.0)
    assert abs(float(norm.transform(drifted).mean())) > 1.0
    norm.refit(drifted)
    np.testing.assert_allclose(norm.transform(drifted).mean(axis=(0, 2)), 0.0, atol=1e-4)


def test_partial_refit_moves_part_way() -> None:
    rng = np.random.default_rng(0)
    norm = Normaliser("standard").fit(data(rng))
    old = norm.center
    new = Normaliser("standard").fit(data(rng, offset=10.0)).center
    norm.refit(data(np.random.default_rng(0), offset=10.0), weight=0.5)
    assert old is not None and new is not None and norm.center is not None
    np.testing.assert_allclose(norm.center, (old + new) / 2, atol=0.5)


def test_signed_log_tames_decades() -> None:
    x = np.array([[[1e4]], [[1e-1]], [[-3.0]], [[50.0]]], dtype=np.float32)
    z = Normaliser("standard", signed_log=True).fit_transform(x)
    assert float(np.abs(z).max()) < 2.0


def test_errors() -> None:
    with pytest.raises(ConfigError, match="valid: none, robust, standard"):
        Normaliser("zscore")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        Normaliser().transform(np.zeros((2, 3, 1)))
    norm = Normaliser().fit(np.zeros((2, 3, 1)))
    with pytest.raises(InputError):
        norm.transform(np.zeros((2, 4, 1)))
    with pytest.raises(ConfigError):
        Normaliser.from_dict({"method": "robust"})
    assert norm.scale.tolist() == [1.0, 1.0, 1.0]  # type: ignore[union-attr]
