"""Change detectors: the configured false-alarm rate holds in measurement."""

from __future__ import annotations

import numpy as np
import pytest

from regulator.errors import ConfigError, InputError, UnknownNameError
from regulator.monitor import DETECTORS, average_run_length, make_detector

M = 500
N = 300_000


@pytest.mark.parametrize(
    ("name", "cfg"),
    [
        ("cusum", {"a": 0.5}),
        ("cusum", {"a": 0.1}),
        ("probit_cusum", {"delta": 1.0}),
        ("mixture_cusum", {}),
        ("mixture_cusum", {"a": [0.2, 0.8], "weights": [1.0, 3.0]}),
    ],
)
def test_mean_samples_between_false_alarms_holds_on_uniform_p_values(
    name: str, cfg: dict[str, float]
) -> None:
    det = make_detector(name, mean_samples_between_false_alarms=M, **cfg)
    det.update(np.random.default_rng(7).uniform(size=N))
    measured = N / max(det.n_alarms, 1)
    assert M / 2 <= measured <= 2 * M, measured


def test_latched_detector_alarms_once_until_reset() -> None:
    det = make_detector("cusum", mean_samples_between_false_alarms=100, reset_on_alarm=False)
    det.update(np.full(20, 1e-4))
    assert det.drift_detected and det.n_alarms == 1
    first = det.alarm_index
    det.update(np.full(5, 0.9))
    assert det.drift_detected and det.alarm_index == first
    det.reset()
    assert not det.drift_detected and det.alarm_index is None


def test_batch_and_one_at_a_time_agree() -> None:
    p = np.random.default_rng(3).uniform(size=3000) ** 2
    a = make_detector("probit_cusum", mean_samples_between_false_alarms=200)
    b = make_detector("probit_cusum", mean_samples_between_false_alarms=200)
    a.update(p)
    alarms = []
    for v in p:
        b.update(float(v))
        alarms.extend(b.alarm_indices)
    assert a.n_alarms == b.n_alarms == len(alarms)
    assert a.alarm_index == alarms[-1]
    assert a.statistic == pytest.approx(b.statistic)


def test_threshold_grows_with_arl0_and_markov_chain_is_converged() -> None:
    h = [make_detector("cusum", mean_samples_between_false_alarms=m).threshold for m in (100, 1e4)]
    assert h[0] < h[1]
    key = ("beta", 0.5)
    assert average_run_length(key, h[1], 300) == pytest.approx(
        average_run_length(key, h[1], 1200), rel=0.01
    )


def test_bad_inputs_and_names() -> None:
    det = make_detector("cusum")
    with pytest.raises(InputError):
        det.update([0.5, 1.5])
    with pytest.raises(InputError):
        det.update([float("nan")])
    with pytest.raises(UnknownNameError) as err:
        make_detector("page_hinkley")
    for name in DETECTORS:
        assert name in str(err.value)
    with pytest.raises(ConfigError, match="a must be"):
        make_detector("cusum", a=1.0)
    with pytest.raises(ConfigError):
        make_detector("cusum", threshold=3.0)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_extreme_p_values_keep_the_statistic_finite(name: str) -> None:
    det = make_detector(name, mean_samples_between_false_alarms=100)
    det.update([1.0, 0.0, 1.0, 1.0])
    assert np.isfinite(det.statistic)
    det.update(np.full(50, 1e-4))
    assert det.n_alarms >= 1 and np.isfinite(det.statistic)


@pytest.mark.parametrize(
    ("name", "cfg"),
    [
        ("cusum", {"a": 0.5}),
        ("cusum", {"a": 0.2}),
        ("probit_cusum", {"delta": 0.5}),
        ("mixture_cusum", {}),
    ],
)
@pytest.mark.parametrize("n_cal", [49, 300])
def test_arl0_holds_on_conformal_grid_p_values_when_calibrated_for_the_grid(
    name: str, cfg: dict[str, float], n_cal: int
) -> None:
    """Conformal p-values of n_cal scores are uniform on k/(n_cal+1): with n_calibration
    the threshold is set for that law, so ARL0 holds (and is not conservative)."""
    u = np.random.default_rng(11).uniform(size=N)
    p = np.ceil(u * (n_cal + 1)) / (n_cal + 1)
    det = make_detector(name, mean_samples_between_false_alarms=M, n_calibration=n_cal, **cfg)
    det.update(p)
    measured = N / max(det.n_alarms, 1)
    assert M / 2 <= measured <= 2 * M, measured
    cont = make_detector(name, mean_samples_between_false_alarms=M, **cfg)
    assert det.threshold <= cont.threshold  # the grid caps -log p: a lower threshold


def test_mixture_cusum_config_checks() -> None:
    with pytest.raises(ConfigError, match="a must"):
        make_detector("mixture_cusum", a=[])
    with pytest.raises(ConfigError, match="weights"):
        make_detector("mixture_cusum", a=[0.2, 0.5], weights=[1.0])
    with pytest.raises(ConfigError, match="n_calibration"):
        make_detector("mixture_cusum", n_calibration=0)
    det = make_detector("mixture_cusum", a=[0.2, 0.5], weights=[1, 3])
    assert det.config["weights"] == [0.25, 0.75]


def test_ood_monitor_calibrates_its_detector_on_the_model_grid() -> None:
    from regulator.monitor import CalibratedScorer, OODMonitor

    rng = np.random.default_rng(5)
    model = CalibratedScorer.fit(
        "mahalanobis", rng.normal(size=(100, 3)), cal_hidden=rng.normal(size=(80, 3))
    )
    m = OODMonitor(model, detector_config={"mean_samples_between_false_alarms": 300})
    assert m.detector.config["n_calibration"] == 80
    cont = OODMonitor(
        model,
        detector_config={"mean_samples_between_false_alarms": 300, "n_calibration": None},
    )
    assert m.detector.threshold < cont.detector.threshold


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_range_check_and_scalar_p_values(name: str) -> None:
    """The serving path's cheaper range check refuses what the old one did (a NaN
    anywhere, a value outside [0, 1]); a scalar p-value is a batch of one."""
    for bad in ([0.5, float("nan"), 0.2], [-0.1], [0.3, 1.0 + 1e-12]):
        with pytest.raises(InputError):
            make_detector(name).update(bad)
    one, batch = make_detector(name), make_detector(name)
    for p in np.random.default_rng(5).uniform(1e-4, 1.0, size=300) ** 3:
        one.update(float(p))
        batch.update([float(p)])
    assert (one.statistic, one.n_seen, one.n_alarms) == (
        batch.statistic, batch.n_seen, batch.n_alarms
    )  # fmt: skip
