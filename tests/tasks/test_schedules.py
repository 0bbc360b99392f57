from __future__ import annotations

import numpy as np
import pytest

from regulator.errors import ConfigError, UnknownNameError
from regulator.tasks import TaskFamily, make_family, make_schedule
from regulator.tasks.schedules import GradualShift, Stream


def fam() -> TaskFamily:
    return make_family("nanosensor", n_sensors=2, n_classes=2, length=4)


def test_abrupt_changes_exactly_at_declared_points() -> None:
    sched = make_schedule("abrupt", change_points=[30, 70])
    stream = Stream(fam(), sched, np.random.default_rng(0), n=100)
    ids = [s.env_id for s in stream]
    changes = [i for i in range(1, 100) if ids[i] != ids[i - 1]]
    assert changes == stream.change_points() == [30, 70]
    assert ids[0] == 0 and ids[50] == 1 and ids[99] == 2


def test_abrupt_every_and_none() -> None:
    assert make_schedule("abrupt", every=25).change_points(100) == [25, 50, 75]
    stream = Stream(fam(), make_schedule("none"), np.random.default_rng(0), n=20)
    assert {s.env_id for s in stream} == {0} and stream.change_points() == []


def test_recurring_returns_to_the_same_environment() -> None:
    stream = Stream(fam(), make_schedule("recurring", period=10), np.random.default_rng(0), n=40)
    ids = [s.env_id for s in stream]
    assert ids[::10] == [0, 1, 0, 1] and stream.change_points() == [10, 20, 30]
    assert stream.environment_at(5) == stream.environment_at(25)
    assert stream.environment_at(5) != stream.environment_at(15)


def test_gradual_interpolates_over_the_window() -> None:
    sched = GradualShift(change_points=[20], width=10)
    stream = Stream(make_family("navigation", length=4), sched, np.random.default_rng(0), n=40)
    a, b = stream.environment(0), stream.environment(1)
    key = "viscosity_mpa_s"
    mid = stream.environment_at(25).params[key]
    w = 6 / 11  # sixth sample of a 10-sample blend
    assert mid == pytest.approx((1 - w) * a.params[key] + w * b.params[key])
    assert stream.environment_at(19) == a and stream.environment_at(30) == b
    ids = [s.env_id for s in stream]
    assert ids[19] == 0 and ids[20:30] == ["0>1"] * 10 and ids[30] == 1
    assert stream.change_points() == [20] and sched.windows(40) == [(20, 30)]


def test_stream_is_reproducible_and_starts_nominal() -> None:
    f = fam()
    sched = make_schedule("abrupt", change_points=[5])
    one = [s.x for s in Stream(f, sched, np.random.default_rng(3), n=10)]
    two = [s.x for s in f.stream(sched, np.random.default_rng(3), n=10)]
    np.testing.assert_array_equal(np.stack(one), np.stack(two))
    st = Stream(f, sched, np.random.default_rng(3), n=10)
    assert st.environment(0) == f.nominal_environment()
    assert st.environment(1).seed >= 0


def test_config_round_trip_and_errors() -> None:
    for cfg in (
        {"kind": "none"},
        {"kind": "abrupt", "change_points": [3, 9]},
        {"kind": "gradual", "every": 50, "width": 10},
        {"kind": "recurring", "period": 7, "n_environments": 3},
    ):
        assert make_schedule(**cfg).config() == cfg
    with pytest.raises(UnknownNameError, match="valid: abrupt, gradual, none, recurring"):
        make_schedule("sudden")
    with pytest.raises(ConfigError):
        make_schedule("abrupt", change_points=[9, 3])
    with pytest.raises(ConfigError):
        make_schedule("abrupt")
    with pytest.raises(ConfigError):
        make_schedule("gradual", change_points=[10, 15], width=10)
    with pytest.raises(ConfigError):
        Stream(fam(), make_schedule("none"), np.random.default_rng(0)).change_points()
