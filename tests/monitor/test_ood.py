"""OOD scorers: conformal p-values are uniform in distribution; shifts are separated."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from regulator.errors import InputError, UnknownNameError
from regulator.monitor import (
    SCORERS,
    CalibratedScorer,
    ConformalCalibrator,
    MahalanobisScorer,
    OODScorer,
    make_scorer,
)


def _auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    u = stats.mannwhitneyu(pos, neg, alternative="greater").statistic
    return float(u) / (len(pos) * len(neg))


def _spike_counts(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    """Poisson spike counts of 20 correlated neurons, three of them dead."""
    latent = rng.normal(size=(n, 4))
    mix = np.random.default_rng(0).normal(size=(4, 20))
    rate = np.exp(0.3 * latent @ mix + 1.0 + shift)
    counts = rng.poisson(rate).astype(float)
    counts[:, :3] = 0.0
    return counts


def test_p_values_are_uniform_in_distribution() -> None:
    """Marginally exact: each test point with its own fresh calibration set."""
    rng = np.random.default_rng(11)
    sc = MahalanobisScorer().fit(_spike_counts(rng, 2000))
    reps, n_cal = 1000, 99
    s = sc.score(_spike_counts(rng, reps * (n_cal + 1))).reshape(reps, n_cal + 1)
    p = np.array([ConformalCalibrator().fit(row[1:]).p_values(row[:1])[0] for row in s])
    assert stats.kstest(p, "uniform").pvalue > 0.01


def test_p_values_with_one_large_calibration_set_are_uniform() -> None:
    """Given one calibration set the law is uniform up to about 1/sqrt(n_cal)."""
    rng = np.random.default_rng(12)
    cs = CalibratedScorer.fit(
        "mahalanobis", _spike_counts(rng, 2000), cal_hidden=_spike_counts(rng, 8000)
    )
    p = cs.p_values(_spike_counts(rng, 1000))
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert p.min() >= 1 / 8001 and p.max() <= 1.0


@pytest.mark.parametrize("shrinkage", ["ledoit_wolf", 0.0, 0.3])
def test_mahalanobis_separates_a_shifted_gaussian(shrinkage: str | float) -> None:
    rng = np.random.default_rng(5)
    d = 16
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    sc = MahalanobisScorer(shrinkage=shrinkage).fit(rng.normal(size=(1000, d)) @ a)
    shift = np.zeros(d)
    shift[:4] = 3.0  # Mahalanobis length 6: per-sample separable
    ind = sc.score(rng.normal(size=(500, d)) @ a)
    ood = sc.score((rng.normal(size=(500, d)) + shift) @ a)
    assert _auroc(ind, ood) >= 0.95


def test_ledoit_wolf_intensity_is_sane() -> None:
    rng = np.random.default_rng(0)
    few = MahalanobisScorer().fit(rng.normal(size=(30, 40)))
    many = MahalanobisScorer().fit(rng.normal(size=(5000, 5)) * [1, 2, 3, 4, 5])
    assert 0.5 < few.shrinkage_intensity <= 1.0
    assert 0.0 <= many.shrinkage_intensity < 0.05


def test_readout_scorers_rank_confident_outputs_as_typical() -> None:
    rng = np.random.default_rng(2)
    confident = rng.normal(size=(300, 5))
    confident[np.arange(300), rng.integers(0, 5, 300)] += 6.0
    flat = rng.normal(size=(300, 5)) * 0.5
    for name in ("energy", "max_softmax"):
        cs = CalibratedScorer.fit(name, None, confident[:100], cal_readout=confident[100:200])
        assert _auroc(cs.score(None, confident[200:]), cs.score(None, flat)) > 0.95


def test_fitted_statistics_round_trip_through_json() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 6))
    for name in SCORERS:
        cs = CalibratedScorer.fit(name, x[:150], x[:150], cal_hidden=x[150:], cal_readout=x[150:])
        back = CalibratedScorer.from_dict(json.loads(json.dumps(cs.to_dict())))
        q = rng.normal(size=(20, 6)) * 2
        np.testing.assert_array_equal(back.p_values(q, q), cs.p_values(q, q))


def test_conformal_formula_with_ties() -> None:
    cal = ConformalCalibrator().fit([1.0, 1.0, 2.0])
    assert cal.p_values([1.0, 1.5, 2.0, 0.0]).tolist() == [1.0, 0.5, 0.5, 1.0]


def test_errors() -> None:
    with pytest.raises(UnknownNameError, match="mahalanobis"):
        make_scorer("isolation_forest")
    with pytest.raises(UnknownNameError):
        OODScorer.from_dict({"name": "nope"})
    sc = MahalanobisScorer()
    with pytest.raises(InputError, match="not fitted"):
        sc.score(np.zeros((2, 3)))
    sc.fit(np.random.default_rng(0).normal(size=(10, 3)))
    with pytest.raises(InputError, match="3 columns"):
        sc.score(np.zeros((2, 4)))
    with pytest.raises(InputError, match="non-finite"):
        sc.score([[np.nan, 0.0, 0.0]])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("column", [0, 2])
def test_mahalanobis_refuses_any_non_finite_hidden_value(bad: float, column: int) -> None:
    """The check reads the scores, not the inputs: a non-finite value anywhere in a row
    must still make that row's score non-finite, even with a dead (constant) neuron."""
    h = np.random.default_rng(1).normal(size=(50, 3))
    h[:, 1] = 0.0  # a silent neuron: its precision column is ~0 off the diagonal
    sc = MahalanobisScorer(shrinkage=0.0).fit(h)
    x = np.zeros((4, 3))
    x[2, column] = bad
    with pytest.raises(InputError, match="non-finite"):
        sc.score(x)
    assert np.isfinite(sc.score(np.zeros((4, 3)))).all()


def test_tail_p_values_go_below_the_grid_and_stay_valid() -> None:
    from regulator.monitor.conformal import ConformalCalibrator

    rng = np.random.default_rng(0)
    low, lower = [], []
    for _ in range(200):  # 100 calibration scores each: the grid's floor is 1/101
        cal = ConformalCalibrator().fit((rng.normal(size=(100, 4)) ** 2).sum(axis=1))
        fresh = (rng.normal(size=(2000, 4)) ** 2).sum(axis=1)
        p = cal.tail_p_values(fresh)
        grid = cal.p_values(fresh)
        assert np.all(p <= grid) and np.all(p[grid > 1 / 101] == grid[grid > 1 / 101])
        low.append(float((p <= 0.005).mean()))
        lower.append(float((p <= 0.002).mean()))
    # in distribution they are still about uniform below the floor
    assert 0.003 < np.mean(low) < 0.008 and 0.001 < np.mean(lower) < 0.005
    far = cal.tail_p_values([60.0])  # chi-square(4) beyond 60: p about 5e-12
    assert far[0] < 1e-3 < 1 / 101  # a far-off sample reads well below a 0.01 threshold


def test_monitor_keeps_tail_p_values_and_restores_old_states() -> None:
    from regulator.monitor.stream import OODMonitor

    rng = np.random.default_rng(1)
    model = CalibratedScorer.fit(
        "mahalanobis", rng.normal(size=(300, 3)), cal_hidden=rng.normal(size=(100, 3))
    )
    m = OODMonitor(model)
    m.update(rng.normal(size=(20, 3)) + 6.0)
    assert min(m.tail_p_values) < 1e-3 <= min(m.p_values)
    assert m.mean_tail_p_value is not None and m.mean_tail_p_value < m.mean_p_value  # type: ignore[operator]
    state = m.state_dict()
    for key in ("p_tail", "ewma_p_tail"):
        state["state"].pop(key)  # as saved before tail p-values existed
    twin = OODMonitor(model)
    twin.load_state_dict(state)
    assert twin.tail_p_values == m.p_values and twin.mean_tail_p_value == m.mean_p_value


def test_tail_p_values_reuse_given_p_values_and_follow_a_refit() -> None:
    """The serving path hands tail_p_values the p-values it has: the same floats as
    computing them afresh, the given array untouched; a refit changes the tail's scale."""
    rng = np.random.default_rng(3)
    cal = ConformalCalibrator().fit((rng.normal(size=(100, 4)) ** 2).sum(axis=1))
    scores = np.concatenate([(rng.normal(size=(50, 4)) ** 2).sum(axis=1), [30.0, 60.0]])
    p = cal.p_values(scores)
    before = p.copy()
    assert np.array_equal(cal.tail_p_values(scores, p), cal.tail_p_values(scores))
    assert np.array_equal(p, before)
    cal.fit((rng.normal(size=(100, 4)) ** 2).sum(axis=1) * 2.0)
    fresh = ConformalCalibrator.from_dict(cal.to_dict())
    assert np.array_equal(cal.tail_p_values(scores), fresh.tail_p_values(scores))


def test_streaming_ewma_is_the_closed_form() -> None:
    """One sample at a time the EWMA takes a scalar path: the very floats of the
    closed form it replaces, (1 - a)^n prev + w @ x with n = 1."""
    from regulator.monitor.stream import _ewma

    rng = np.random.default_rng(4)
    for a in (0.01, 0.1, 0.37):
        prev = 0.5
        for x in rng.uniform(size=200):
            w = a * (1.0 - a) ** np.arange(0, -1, -1, dtype=np.float64)
            want = float((1.0 - a) ** 1 * prev + float(w @ np.array([x])))
            got = _ewma(prev, np.array([x]), a)
            assert got == want
            prev = got


def test_mahalanobis_score_leaves_its_input_alone_and_keeps_the_formula() -> None:
    """The score works in place on its own copy only: a float64 input (no copy made)
    is not written to, and every dtype gives the bits of ``((x - m) P (x - m)).sum``."""
    rng = np.random.default_rng(3)
    sc = MahalanobisScorer().fit(rng.normal(size=(200, 6)))
    assert sc._mean is not None and sc._precision is not None
    h64 = rng.normal(size=(40, 6))
    kept = h64.copy()
    d = h64 - sc._mean
    want = ((d @ sc._precision) * d).sum(axis=1)
    assert np.array_equal(sc.score(h64), want)
    assert np.array_equal(h64, kept)
    h32 = rng.integers(0, 5, size=(40, 6)).astype(np.float32)
    d = h32.astype(np.float64) - sc._mean
    assert np.array_equal(sc.score(h32), ((d @ sc._precision) * d).sum(axis=1))
    assert np.array_equal(sc.score(h32.tolist()), sc.score(h32))
