"""Each environment parameter moves the data the way its physics says."""

from __future__ import annotations

import numpy as np

from regulator.tasks import Environment
from regulator.tasks.nanosensor import NanosensorFamily

FAM = NanosensorFamily(n_sensors=4, n_classes=3, length=40)
CLASSES = np.zeros(200, dtype=np.int64)


def quiet(**changes: float) -> Environment:
    params = FAM.nominal_environment().params | {"noise_std": 0.0} | changes
    return Environment(family="nanosensor", params=params, seed=-1)


def mean_response(env: Environment) -> np.ndarray:
    x, _ = FAM.sample(env, CLASSES.size, np.random.default_rng(0), classes=CLASSES)
    return x.mean(axis=0)  # [S, L]


def rise_time_s(trace: np.ndarray) -> float:
    """Seconds from onset to 63 % of the final step."""
    base, final = trace[0], trace[-1]
    k = int(np.argmax((trace - base) >= 0.63 * (final - base)))
    return k * FAM.sample_period_s - FAM.onset_s


def test_higher_viscosity_slows_the_response() -> None:
    best = int(np.argmax(FAM.signatures[0]))
    fast = mean_response(quiet(viscosity_mpa_s=0.5))[best]
    slow = mean_response(quiet(viscosity_mpa_s=2.0))[best]
    assert rise_time_s(slow) > rise_time_s(fast)
    assert FAM.time_constant_s(quiet(viscosity_mpa_s=2.0), 0) == 4 * FAM.time_constant_s(
        quiet(viscosity_mpa_s=0.5), 0
    )


def test_higher_temperature_raises_the_gain() -> None:
    cold = mean_response(quiet(temperature_c=15.0, viscosity_mpa_s=0.2))
    hot = mean_response(quiet(temperature_c=35.0, viscosity_mpa_s=0.2))
    assert np.all(hot[:, -1] > cold[:, -1])  # every sensor's steady state


def test_ph_shifts_the_baselines() -> None:
    neutral = mean_response(quiet())[:, 0]  # before onset: the baseline
    acid = mean_response(quiet(ph=5.5))[:, 0]
    np.testing.assert_allclose(neutral, 0.0, atol=1e-6)
    np.testing.assert_allclose(acid, FAM.ph_sensitivity * -1.5, rtol=1e-5, atol=1e-6)


def test_sensor_gain_and_offset_drift_are_per_sensor() -> None:
    base = mean_response(quiet())
    drifted = mean_response(quiet(sensor1_gain=2.0, sensor1_offset=0.5))
    np.testing.assert_allclose(drifted[1], 2.0 * base[1] + 0.5, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(drifted[0], base[0], rtol=1e-6)


def test_dead_sensor_reads_only_noise() -> None:
    x, _ = FAM.sample(quiet(sensor2_alive=0.0, noise_std=0.05), 50, np.random.default_rng(0))
    assert abs(float(x[:, 2].mean())) < 0.02 and 0.03 < float(x[:, 2].std()) < 0.07


def test_interferent_adds_signal_and_noise_adds_spread() -> None:
    clean = mean_response(quiet())
    dirty = mean_response(quiet(interferent_level=1.0))
    assert dirty[:, -1].sum() > clean[:, -1].sum()
    x0, _ = FAM.sample(quiet(), 50, np.random.default_rng(0), classes=CLASSES[:50])
    x1, _ = FAM.sample(quiet(noise_std=0.2), 50, np.random.default_rng(0), classes=CLASSES[:50])
    assert float(np.std(x1[:, :, 0])) > float(np.std(x0[:, :, 0])) + 0.1


def test_zero_drift_scale_draws_the_nominal_conditions() -> None:
    fam = NanosensorFamily(drift_scale=0.0)
    env = fam.sample_environment(np.random.default_rng(3))
    assert env.params == fam.nominal_environment().params
