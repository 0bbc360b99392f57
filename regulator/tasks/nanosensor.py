"""`nanosensor`: an array of chemical sensors identifying which analyte is present.

Each sample is the array's response to one exposure: a baseline, then, from
``onset_s``, a first-order rise towards a steady state. Physics of the environment:

- temperature (``temperature_c``, °C) raises the gain by
  ``exp(k_as * (T - 25))``, with ``k_as`` per analyte and sensor around
  ``temp_coeff_per_c``
  (adsorption is thermally activated, with analyte-specific activation energies, so
  the selectivity pattern changes too) and, with viscosity, sets the response time
  constant through Stokes–Einstein;
- viscosity (``viscosity_mpa_s``, mPa·s) slows diffusion to the surface:
  ``tau = tau0_s * kinetics[analyte] * (eta / 1 mPa·s) * (298.15 K / T)``;
- pH (``ph``) shifts each sensor's baseline by ``ph_sensitivity[s] * (pH - 7)``
  (a Nernst-like surface charge), different per sensor, and scales each analyte's
  response on each sensor by ``exp(ph_coeff[a, s] * (pH - 7))`` (protonation changes
  how the analyte binds to each coating);
- ageing: per-sensor gain (``sensor{i}_gain``, ×) and offset (``sensor{i}_offset``, a.u.)
  drift, and dead sensors (``sensor{i}_alive``, 1 healthy, 0 dead: reads only noise);
- an interferent (``interferent_level``, a.u.) that adds its own response to a random
  fraction of samples, and additive white noise (``noise_std``, a.u.).

Signals are in arbitrary units (a.u.): a healthy sensor's full response to its best
analyte at nominal conditions is about 1.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np

from regulator.errors import ConfigError
from regulator.tasks.base import Environment, TaskFamily, check_params, register_family

__all__ = ["NanosensorFamily"]

_T_REF_C = 25.0
_KELVIN = 273.15


@register_family
class NanosensorFamily(TaskFamily):
    """S chemical sensors x L time points, classify which of C analytes is present.

    ``seed`` fixes the chemistry (analyte signatures, pH sensitivities, interferent);
    ``drift_scale`` scales how far environments stray from nominal (0 = no drift).

    >>> fam = NanosensorFamily(n_sensors=4, n_classes=3, length=16)
    >>> x, y = fam.sample(fam.nominal_environment(), 5, np.random.default_rng(0))
    >>> x.shape, x.dtype, y.dtype
    ((5, 4, 16), dtype('float32'), dtype('int64'))
    """

    name: ClassVar[str] = "nanosensor"
    kind: ClassVar[Literal["classification", "regression"]] = "classification"

    def __init__(
        self,
        n_sensors: int = 8,
        n_classes: int = 5,
        length: int = 32,
        sample_period_s: float = 0.1,
        onset_s: float = 0.4,
        tau0_s: float = 0.4,
        temp_coeff_per_c: float = 0.03,
        drift_scale: float = 1.0,
        dead_probability: float = 0.08,
        seed: int = 0,
    ) -> None:
        if n_sensors < 1 or n_classes < 2 or length < 2:
            raise ConfigError("nanosensor needs n_sensors >= 1, n_classes >= 2, length >= 2")
        if sample_period_s <= 0 or tau0_s <= 0 or drift_scale < 0:
            raise ConfigError("sample_period_s and tau0_s must be > 0, drift_scale >= 0")
        if not 0.0 <= dead_probability < 1.0:
            raise ConfigError("dead_probability must lie in [0, 1)")
        self.n_channels = n_sensors
        self.length = length
        self.n_outputs = n_classes
        self.sample_period_s = sample_period_s
        self.onset_s = onset_s
        self.tau0_s = tau0_s
        self.temp_coeff_per_c = temp_coeff_per_c
        self.drift_scale = drift_scale
        self.dead_probability = dead_probability
        self.seed = seed
        chem = np.random.default_rng([seed, 0xC4E])
        # Partially selective sensors: each analyte excites a few sensors strongly.
        # Overlapping signatures: a response shared by all analytes plus a specific part.
        sig = 2.5 * chem.gamma(2.0, 1.0, size=n_sensors) + chem.gamma(
            1.0, 1.0, size=(n_classes, n_sensors)
        )
        self.signatures = sig / sig.max(axis=1, keepdims=True)
        self.kinetics = chem.uniform(0.6, 1.8, size=n_classes)
        self.ph_sensitivity = chem.uniform(-0.4, 0.4, size=n_sensors)
        # Per analyte-sensor pair [C, S]: heating and pH change the selectivity pattern.
        self.temp_coeffs = temp_coeff_per_c * chem.uniform(0.0, 2.0, size=(n_classes, n_sensors))
        self.ph_coeffs = chem.uniform(-0.4, 0.4, size=(n_classes, n_sensors))
        inter = chem.gamma(0.6, 1.0, size=n_sensors)
        self.interferent_signature = inter / inter.max()
        self.interferent_kinetics = float(chem.uniform(0.6, 1.8))

    def config(self) -> dict[str, Any]:
        return {
            "n_sensors": self.n_channels,
            "n_classes": self.n_outputs,
            "length": self.length,
            "sample_period_s": self.sample_period_s,
            "onset_s": self.onset_s,
            "tau0_s": self.tau0_s,
            "temp_coeff_per_c": self.temp_coeff_per_c,
            "drift_scale": self.drift_scale,
            "dead_probability": self.dead_probability,
            "seed": self.seed,
        }

    def _param_names(self) -> list[str]:
        names = ["temperature_c", "ph", "viscosity_mpa_s", "interferent_level", "noise_std"]
        for i in range(self.n_channels):
            names += [f"sensor{i}_gain", f"sensor{i}_offset", f"sensor{i}_alive"]
        return names

    def nominal_environment(self) -> Environment:
        params = {
            "temperature_c": _T_REF_C,
            "ph": 7.0,
            "viscosity_mpa_s": 1.0,
            "interferent_level": 0.0,
            "noise_std": 0.08,
        }
        for i in range(self.n_channels):
            params |= {f"sensor{i}_gain": 1.0, f"sensor{i}_offset": 0.0, f"sensor{i}_alive": 1.0}
        return Environment(family=self.name, params=params, seed=-1)

    def environment_from_seed(self, seed: int) -> Environment:
        rng = np.random.default_rng([seed, 0xE7])
        s = self.drift_scale
        params = {
            "temperature_c": _T_REF_C + s * rng.uniform(-15.0, 15.0),
            "ph": 7.0 + s * rng.uniform(-1.5, 1.5),
            "viscosity_mpa_s": float(np.exp(s * rng.uniform(np.log(0.5), np.log(4.0)))),
            "interferent_level": s * rng.uniform(0.0, 0.6),
            "noise_std": 0.08 + s * rng.uniform(0.0, 0.06),
        }
        for i in range(self.n_channels):
            params[f"sensor{i}_gain"] = float(np.exp(s * rng.normal(0.0, 0.3)))
            params[f"sensor{i}_offset"] = s * rng.normal(0.0, 0.3)
            dead = s > 0 and rng.random() < self.dead_probability
            params[f"sensor{i}_alive"] = 0.0 if dead else 1.0
        return Environment(family=self.name, params=params, seed=seed)

    def time_constant_s(self, env: Environment, analyte: int) -> float:
        """Response time constant (s) of ``analyte`` in ``env`` (Stokes–Einstein)."""
        p = env.params
        t_k = p["temperature_c"] + _KELVIN
        return float(
            self.tau0_s * self.kinetics[analyte] * p["viscosity_mpa_s"] * (_T_REF_C + _KELVIN) / t_k
        )

    def sample(
        self,
        env: Environment,
        n: int,
        rng: np.random.Generator,
        classes: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        self._check_env(env)
        p = env.params
        check_params(p, self._param_names())
        y = self._check_classes(n, classes, rng)
        s_count = self.n_channels
        t = np.arange(self.length) * self.sample_period_s - self.onset_s  # s since onset
        t_pos = np.clip(t, 0.0, None)
        t_k = p["temperature_c"] + _KELVIN
        slow = p["viscosity_mpa_s"] * (_T_REF_C + _KELVIN) / t_k  # tau multiplier
        # Per analyte-sensor gain from temperature and pH: [C, S].
        analyte_gain = np.exp(
            self.temp_coeffs * (p["temperature_c"] - _T_REF_C) + self.ph_coeffs * (p["ph"] - 7.0)
        )

        # First-order rise, per analyte: [C, L].
        tau = self.tau0_s * self.kinetics * slow
        rise = np.where(t >= 0, 1.0 - np.exp(-t_pos[None, :] / tau[:, None]), 0.0)
        conc = rng.uniform(0.5, 1.5, size=n)  # relative concentration
        pattern = self.signatures * analyte_gain  # [C, S]
        resp = conc[:, None, None] * pattern[y][:, :, None] * rise[y][:, None, :]

        level = p["interferent_level"]
        if level > 0:
            tau_i = self.tau0_s * self.interferent_kinetics * slow
            rise_i = np.where(t >= 0, 1.0 - np.exp(-t_pos / tau_i), 0.0)
            amp = level * rng.uniform(0.0, 1.0, size=n) * (rng.random(n) < 0.5)
            resp = resp + amp[:, None, None] * self.interferent_signature[None, :, None] * rise_i

        gain = np.array([p[f"sensor{i}_gain"] for i in range(s_count)])
        offset = np.array([p[f"sensor{i}_offset"] for i in range(s_count)])
        offset = offset + self.ph_sensitivity * (p["ph"] - 7.0)
        alive = np.array([p[f"sensor{i}_alive"] for i in range(s_count)])
        x = alive[None, :, None] * (gain[None, :, None] * resp + offset[None, :, None])
        x = x + p["noise_std"] * rng.standard_normal(x.shape)
        return x.astype(np.float32), y
