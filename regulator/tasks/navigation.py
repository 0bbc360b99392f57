"""`navigation`: a micro-robot in a blood vessel regresses the mean flow velocity.

Flow is Poiseuille flow in a vessel of radius R with a pulsatile mean velocity
``U(t) = U * (1 + a * sin(2π f t + φ))``. The robot carries four sensors (channels):

0. pressure-gradient sensor, Pa/mm: ``dp/dx = 8 μ U(t) / R²``;
1. hot-film sensor at radial position ``r - d``, King's law: ``sqrt(u_local / ν)``,
   with ``u_local = 2 U(t) (1 - (r/R)²)`` and kinematic viscosity ``ν = μ / ρ``;
2. the same at ``r + d`` (so an off-axis robot sees a velocity gradient);
3. wall-shear sensor, Pa: ``τ_w = 4 μ U(t) / R``.

The target is ``U`` in mm/s, float32 ``[n]``. The environment sets viscosity
(``viscosity_mpa_s``), vessel radius (``vessel_radius_um``), pulse rate
(``pulse_rate_hz``) and depth (``pulse_amplitude``, fraction of U), the robot's
radial position (``radial_position``, fraction of R), per-sensor gain drift
(``sensor{i}_gain``) and noise (``noise_std``, relative to each channel's scale).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np

from regulator.errors import ConfigError
from regulator.tasks.base import Environment, TaskFamily, check_params, register_family

__all__ = ["NavigationFamily"]

_N_SENSORS = 4
_DENSITY_KG_M3 = 1050.0  # blood
_SENSOR_SPACING = 0.15  # hot-film offset d, fraction of R
# Channel scales (typical magnitude) so that noise_std is relative: Pa/mm, sqrt(s^-1)·mm, Pa.
_CHANNEL_SCALE = np.array([2.0, 2.0, 2.0, 0.2])


@register_family
class NavigationFamily(TaskFamily):
    """Regress mean flow velocity (mm/s) from 4 flow sensors x L time points.

    >>> fam = NavigationFamily(length=8)
    >>> x, y = fam.sample(fam.nominal_environment(), 3, np.random.default_rng(0))
    >>> x.shape, y.shape, y.dtype
    ((3, 4, 8), (3,), dtype('float32'))
    """

    name: ClassVar[str] = "navigation"
    kind: ClassVar[Literal["classification", "regression"]] = "regression"

    def __init__(
        self,
        length: int = 32,
        sample_period_s: float = 0.05,
        velocity_range_mm_s: tuple[float, float] = (0.5, 10.0),
        drift_scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        lo, hi = (float(v) for v in velocity_range_mm_s)
        if length < 2 or sample_period_s <= 0 or not 0 < lo < hi or drift_scale < 0:
            raise ConfigError(
                "navigation needs length >= 2, sample_period_s > 0, "
                "0 < velocity_range_mm_s[0] < [1], drift_scale >= 0"
            )
        self.n_channels = _N_SENSORS
        self.length = length
        self.n_outputs = 1
        self.sample_period_s = sample_period_s
        self.velocity_range_mm_s = (lo, hi)
        self.drift_scale = drift_scale
        self.seed = seed

    def config(self) -> dict[str, Any]:
        return {
            "length": self.length,
            "sample_period_s": self.sample_period_s,
            "velocity_range_mm_s": list(self.velocity_range_mm_s),
            "drift_scale": self.drift_scale,
            "seed": self.seed,
        }

    def _param_names(self) -> list[str]:
        names = [
            "viscosity_mpa_s",
            "vessel_radius_um",
            "pulse_rate_hz",
            "pulse_amplitude",
            "radial_position",
            "noise_std",
        ]
        return names + [f"sensor{i}_gain" for i in range(_N_SENSORS)]

    def nominal_environment(self) -> Environment:
        params = {
            "viscosity_mpa_s": 3.5,  # whole blood
            "vessel_radius_um": 150.0,
            "pulse_rate_hz": 1.2,
            "pulse_amplitude": 0.2,
            "radial_position": 0.0,
            "noise_std": 0.02,
        }
        params |= {f"sensor{i}_gain": 1.0 for i in range(_N_SENSORS)}
        return Environment(family=self.name, params=params, seed=-1)

    def environment_from_seed(self, seed: int) -> Environment:
        rng = np.random.default_rng([seed, 0x4A7])
        s = self.drift_scale
        nom = self.nominal_environment().params
        params = {
            "viscosity_mpa_s": nom["viscosity_mpa_s"] * float(np.exp(s * rng.uniform(-1.0, 0.6))),
            "vessel_radius_um": nom["vessel_radius_um"] * float(np.exp(s * rng.uniform(-0.7, 0.7))),
            "pulse_rate_hz": nom["pulse_rate_hz"] * float(np.exp(s * rng.uniform(-0.6, 0.6))),
            "pulse_amplitude": float(np.clip(0.2 + s * rng.uniform(-0.2, 0.3), 0.0, 0.9)),
            "radial_position": s * rng.uniform(0.0, 0.6),
            "noise_std": 0.02 + s * rng.uniform(0.0, 0.04),
        }
        for i in range(_N_SENSORS):
            params[f"sensor{i}_gain"] = float(np.exp(s * rng.normal(0.0, 0.15)))
        return Environment(family=self.name, params=params, seed=seed)

    def sample(
        self,
        env: Environment,
        n: int,
        rng: np.random.Generator,
        classes: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        self._check_env(env)
        if classes is not None:
            raise ConfigError("navigation is a regression family: classes must be None")
        p = env.params
        check_params(p, self._param_names())
        lo, hi = self.velocity_range_mm_s
        u_mean = rng.uniform(lo, hi, size=n)  # mm/s
        phase = rng.uniform(0.0, 2 * np.pi, size=n)
        t = np.arange(self.length) * self.sample_period_s
        pulse = 1.0 + p["pulse_amplitude"] * np.sin(
            2 * np.pi * p["pulse_rate_hz"] * t[None, :] + phase[:, None]
        )
        u_t = u_mean[:, None] * pulse * 1e-3  # m/s, [n, L]
        mu = p["viscosity_mpa_s"] * 1e-3  # Pa·s
        radius = p["vessel_radius_um"] * 1e-6  # m
        nu_mm2_s = mu / _DENSITY_KG_M3 * 1e6
        r = p["radial_position"]

        x = np.empty((n, _N_SENSORS, self.length))
        x[:, 0] = 8.0 * mu * u_t / radius**2 * 1e-3  # Pa/m -> Pa/mm
        for ch, pos in ((1, r - _SENSOR_SPACING), (2, r + _SENSOR_SPACING)):
            u_local_mm_s = 2.0 * u_t * 1e3 * max(0.0, 1.0 - pos**2)
            x[:, ch] = np.sqrt(np.clip(u_local_mm_s, 0.0, None) / nu_mm2_s)
        x[:, 3] = 4.0 * mu * u_t / radius
        gain = np.array([p[f"sensor{i}_gain"] for i in range(_N_SENSORS)])
        x = gain[None, :, None] * x
        x = x + p["noise_std"] * _CHANNEL_SCALE[None, :, None] * rng.standard_normal(x.shape)
        return x.astype(np.float32), u_mean.astype(np.float32)
