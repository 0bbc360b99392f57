"""Flow physics: Poiseuille pressure gradient, King's-law hot films, wall shear, pulses."""

from __future__ import annotations

import numpy as np

from regulator.tasks import Environment
from regulator.tasks.navigation import NavigationFamily

FAM = NavigationFamily(length=40)


def quiet(**changes: float) -> Environment:
    params = FAM.nominal_environment().params | {"noise_std": 0.0} | changes
    return Environment(family="navigation", params=params, seed=-1)


def channels(env: Environment) -> tuple[np.ndarray, np.ndarray]:
    x, y = FAM.sample(env, 100, np.random.default_rng(0))
    return x.mean(axis=2), y  # time-mean per channel


def test_pressure_gradient_follows_poiseuille() -> None:
    x, y = channels(quiet(pulse_amplitude=0.0))
    expected = 8 * 3.5e-3 * (y * 1e-3) / (150e-6) ** 2 * 1e-3  # Pa/mm
    np.testing.assert_allclose(x[:, 0], expected, rtol=1e-4)


def test_higher_viscosity_raises_pressure_and_lowers_hot_film() -> None:
    thin, _ = channels(quiet(viscosity_mpa_s=1.0))
    thick, _ = channels(quiet(viscosity_mpa_s=4.0))
    np.testing.assert_allclose(thick[:, 0], 4 * thin[:, 0], rtol=1e-4)
    assert np.all(thick[:, 1] < thin[:, 1])
    assert np.all(thick[:, 3] > thin[:, 3])


def test_narrower_vessel_raises_pressure_gradient() -> None:
    wide, _ = channels(quiet(vessel_radius_um=300.0))
    narrow, _ = channels(quiet(vessel_radius_um=150.0))
    np.testing.assert_allclose(narrow[:, 0], 4 * wide[:, 0], rtol=1e-4)


def test_pulsatile_flow_varies_over_time() -> None:
    steady, _ = FAM.sample(quiet(pulse_amplitude=0.0), 20, np.random.default_rng(0))
    pulsing, _ = FAM.sample(quiet(pulse_amplitude=0.5), 20, np.random.default_rng(0))
    assert float(steady[:, 0].std(axis=1).max()) < 1e-6
    assert float(pulsing[:, 0].std(axis=1).min()) > 0.0


def test_off_axis_robot_sees_a_velocity_gradient() -> None:
    x, _ = channels(quiet(radial_position=0.5))
    assert np.all(x[:, 1] > x[:, 2])  # the inner hot film is in faster flow
    x, _ = channels(quiet(radial_position=0.0))
    np.testing.assert_allclose(x[:, 1], x[:, 2], rtol=1e-5)


def test_target_is_mean_velocity_in_range() -> None:
    _, y = channels(quiet())
    assert y.min() >= 0.5 and y.max() <= 10.0
