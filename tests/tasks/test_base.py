from __future__ import annotations

import json

import numpy as np
import pytest

from regulator.errors import ConfigError, InputError, UnknownNameError
from regulator.tasks import Environment, TaskFamily, family_names, interpolate, make_family


def small(name: str) -> TaskFamily:
    return make_family(name, **({"length": 8} if name != "file" else {}))


@pytest.mark.parametrize("name", ["nanosensor", "navigation"])
def test_seeded_environment_reproduces_exactly(name: str) -> None:
    fam = small(name)
    a = fam.sample_environment(np.random.default_rng(7))
    b = fam.sample_environment(np.random.default_rng(7))
    assert a == b
    assert fam.environment_from_seed(a.seed) == a
    xa, ya = fam.sample(a, 5, np.random.default_rng(1))
    xb, yb = fam.sample(b, 5, np.random.default_rng(1))
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    assert fam.sample_environment(np.random.default_rng(8)) != a


@pytest.mark.parametrize("name", ["nanosensor", "navigation"])
def test_config_rebuilds_the_family(name: str) -> None:
    fam = small(name)
    cfg = json.loads(json.dumps(fam.config()))
    again = make_family(name, **cfg)
    env = fam.nominal_environment()
    np.testing.assert_array_equal(
        fam.sample(env, 3, np.random.default_rng(0))[0],
        again.sample(env, 3, np.random.default_rng(0))[0],
    )


def test_sample_shapes_and_dtypes() -> None:
    fam = small("nanosensor")
    x, y = fam.sample(fam.nominal_environment(), 6, np.random.default_rng(0))
    assert x.shape == (6, fam.n_channels, fam.length) and x.dtype == np.float32
    assert y.dtype == np.int64 and y.min() >= 0 and y.max() < fam.n_outputs
    nav = small("navigation")
    x, y = nav.sample(nav.nominal_environment(), 6, np.random.default_rng(0))
    assert x.shape == (6, 4, 8) and y.shape == (6,) and y.dtype == np.float32


def test_episode_is_n_way_k_shot() -> None:
    fam = small("nanosensor")
    ep = fam.episode(fam.nominal_environment(), k_shot=3, n_query=10, rng=np.random.default_rng(0))
    assert ep.support_x.shape == (3 * fam.n_outputs, fam.n_channels, fam.length)
    assert np.bincount(ep.support_y, minlength=fam.n_outputs).tolist() == [3] * fam.n_outputs
    assert ep.query_x.shape[0] == 10 and ep.query_y.shape == (10,)
    nav = small("navigation")
    ep = nav.episode(nav.nominal_environment(), 4, 6, np.random.default_rng(0))
    assert ep.support_y.shape == (4,) and ep.query_y.shape == (6,)


def test_classes_fix_labels_and_are_validated() -> None:
    fam = small("nanosensor")
    env = fam.nominal_environment()
    _, y = fam.sample(env, 3, np.random.default_rng(0), classes=np.array([2, 0, 1]))
    assert y.tolist() == [2, 0, 1]
    with pytest.raises(InputError):
        fam.sample(env, 2, np.random.default_rng(0), classes=np.array([0, 99]))


def test_unknown_family_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        make_family("nope")
    for name in ("nanosensor", "navigation", "file"):
        assert name in str(info.value)
    assert {"nanosensor", "navigation", "file"} <= set(family_names())


def test_bad_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        make_family("nanosensor", n_sensors=0)
    with pytest.raises(ConfigError):
        make_family("nanosensor", bogus=1)


def test_environment_is_frozen_and_forbids_extra() -> None:
    env = Environment(family="f", params={"ph": 7.0}, seed=1)
    with pytest.raises(ValueError):
        Environment.model_validate({"family": "f", "params": {}, "seed": 1, "other": 2})
    with pytest.raises(ValueError):
        env.seed = 2


def test_wrong_family_environment_is_rejected() -> None:
    nav = small("navigation")
    with pytest.raises(InputError):
        small("nanosensor").sample(nav.nominal_environment(), 1, np.random.default_rng(0))


def test_interpolate_blends_linearly() -> None:
    a = Environment(family="f", params={"t": 0.0, "u": 10.0}, seed=1)
    b = Environment(family="f", params={"t": 4.0, "u": 20.0}, seed=2)
    assert interpolate(a, b, 0.0) == a and interpolate(a, b, 1.0) == b
    assert interpolate(a, b, 0.5).params == {"t": 2.0, "u": 15.0}
