"""Sequential change detectors on conformal p-values, with a calibrated false-alarm rate.

The false-alarm rate is configured as ``mean_samples_between_false_alarms`` (the
in-control average run length, ARL0): on an in-distribution stream, whose p-values are
uniform on (0, 1], the detector raises on average one alarm per that many samples. The
CUSUM threshold ``h`` is set from ARL0 by the Markov-chain method of Brook and Evans
(Biometrika 59, 1972) applied to the exact in-control law of the CUSUM increments, so
it is deterministic, needs no simulation and is cached per configuration.

Two plug-ins, chosen with :func:`make_detector`:

* ``"cusum"``: CUSUM of the log-likelihood ratio of p-values under a Beta(a, 1)
  alternative (density ``a p^(a-1)``, small p-values more likely), i.e. of
  ``log a + (1 - a)(-log p)``; ``-log p`` is Exp(1) in control.
* ``"probit_cusum"``: CUSUM of ``delta z - delta^2 / 2`` with ``z = Phi^-1(1 - p)``,
  which is N(0, 1) in control: the optimal test for a mean shift ``delta`` of z.
* ``"mixture_cusum"``: multi-scale CUSUM of the log of a *mixture* of Beta(a, 1)
  likelihood ratios over several ``a`` (one statistic, so the several scales share one
  false-alarm budget); the threshold comes from the exact in-control law of the mixture
  increment by the same Markov-chain method, so ARL0 holds as for ``"cusum"``.

Conformal p-values calibrated on ``n`` scores are not continuous: in control they are
uniform on the grid ``1/(n+1), ..., 1``, so the smallest is ``1/(n+1)`` and a threshold
set for continuous p-values is conservative (for n = 300 about twice as few false alarms
as configured, and later detection). Give ``n_calibration=n`` (the
:class:`~regulator.monitor.stream.OODMonitor` does) and the threshold is calibrated on
that exact grid law instead.

"On average" is over calibration sets as well as streams. Given one calibration set of
``n`` scores, the p-values are uniform only marginally, and the long-run false-alarm
rate of that one deployment varies with where its calibration scores fell: mean 5x,
median 0.8x the configured rate at n = 50, 1.3-1.4x on average at n = 300 and 0.9-1.2x
at n = 1000 (``bench/results/calibration_conditional.md``).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

from regulator.errors import ConfigError
from regulator.monitor.base import check_float, make_plugin
from regulator.monitor.recursive import ChangeDetector, RecursiveDetector
from regulator.monitor.threshold import average_run_length, calibrate_threshold, log_mixture_lr


class CusumDetector(RecursiveDetector):
    """CUSUM on a transform of p-values, threshold calibrated from ARL0.

    ``S_t = max(0, S_{t-1} + x_t)``; alarm when ``S_t >= h``, ``h`` set by the
    Brook-Evans chain on the exact in-control law of the increments.
    """

    _lindley = True

    @abstractmethod
    def _law_key(self) -> tuple[Any, ...]:
        """Hashable description of the in-control increment law (for the cache)."""

    def _threshold_for(self, arl0: float) -> float:
        key = self._law_key()
        if self._n_cal is not None:
            key = ("conformal", self._n_cal, key)
        return calibrate_threshold(key, arl0)

    def _path(self, s0: float, x: NDArray[np.float64]) -> NDArray[np.float64]:
        c = s0 + np.cumsum(x)
        out: NDArray[np.float64] = c - np.minimum(np.minimum.accumulate(c), 0.0)  # Lindley
        return out


class BetaCusum(CusumDetector):
    """CUSUM of the p-value likelihood ratio against a Beta(a, 1) alternative.

    Smaller ``a`` is tuned to larger shifts (p-values piling up nearer 0).

    >>> det = BetaCusum(mean_samples_between_false_alarms=500, a=0.5)
    >>> round(det.threshold, 3)
    3.702
    >>> det.update([0.5] * 10)
    >>> det.drift_detected, det.statistic
    (False, 0.0)
    >>> det.update([1e-3] * 3)
    >>> det.drift_detected, det.alarm_index, det.change_index
    (True, 11, 10)
    """

    name = "cusum"

    def __init__(
        self,
        mean_samples_between_false_alarms: float = 1000.0,
        *,
        a: float = 0.5,
        reset_on_alarm: bool = True,
        n_calibration: int | None = None,
    ) -> None:
        self._a = check_float("a", a, low=0.0, high=1.0, low_open=True, high_open=True)
        super().__init__(
            mean_samples_between_false_alarms,
            reset_on_alarm=reset_on_alarm,
            n_calibration=n_calibration,
        )

    def _law_key(self) -> tuple[Any, ...]:
        return ("beta", self._a)

    def _increments(self, p: NDArray[np.float64]) -> NDArray[np.float64]:
        out: NDArray[np.float64] = math.log(self._a) - (1.0 - self._a) * np.log(p)
        return out

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "a": self._a}


class ProbitCusum(CusumDetector):
    """CUSUM for a mean shift ``delta`` of ``z = Phi^-1(1 - p)`` (N(0, 1) in control).

    >>> det = ProbitCusum(mean_samples_between_false_alarms=500, delta=1.0)
    >>> round(det.threshold, 3)
    4.389
    >>> det.update([0.5] * 10 + [0.01] * 3)
    >>> det.drift_detected, det.alarm_index
    (True, 12)
    """

    name = "probit_cusum"

    def __init__(
        self,
        mean_samples_between_false_alarms: float = 1000.0,
        *,
        delta: float = 1.0,
        reset_on_alarm: bool = True,
        n_calibration: int | None = None,
    ) -> None:
        self._delta = check_float("delta", delta, low=0.0, high=20.0, low_open=True)
        super().__init__(
            mean_samples_between_false_alarms,
            reset_on_alarm=reset_on_alarm,
            n_calibration=n_calibration,
        )

    def _law_key(self) -> tuple[Any, ...]:
        return ("normal", self._delta)

    def _increments(self, p: NDArray[np.float64]) -> NDArray[np.float64]:
        z = -special.ndtri(np.minimum(p, 1.0 - 1e-16))  # p = 1 is common: keep z finite
        out: NDArray[np.float64] = self._delta * z - 0.5 * self._delta**2
        return out

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "delta": self._delta}


_DEFAULT_MIX_A = (0.1, 0.25, 0.5, 0.75)


def _check_mixture(a: Any, weights: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Validated Beta(a, 1) mixture: powers in (0, 1) and weights summing to 1."""
    try:
        a_t = tuple(float(v) for v in a)
    except TypeError:
        raise ConfigError(f"a must be a list of numbers in (0, 1), got {a!r}") from None
    if not a_t or len(a_t) > 16:
        raise ConfigError(f"a must list 1 to 16 numbers in (0, 1), got {a!r}")
    a_t = tuple(check_float("a", v, low=0.0, high=1.0, low_open=True, high_open=True) for v in a_t)
    if weights is None:
        w_t = tuple(1.0 / len(a_t) for _ in a_t)
    else:
        try:
            w_t = tuple(float(v) for v in weights)
        except TypeError:
            raise ConfigError(f"weights must be a list of numbers, got {weights!r}") from None
        if len(w_t) != len(a_t) or any(not (v > 0.0 and math.isfinite(v)) for v in w_t):
            raise ConfigError(f"weights must be {len(a_t)} positive numbers, got {weights!r}")
        tot = sum(w_t)
        w_t = tuple(v / tot for v in w_t)
    return a_t, w_t


class MixtureCusum(CusumDetector):
    """Multi-scale CUSUM: increments are the log of a mixture of Beta(a, 1) likelihood
    ratios of the p-values, ``log sum_k w_k a_k p^(a_k - 1)``.

    One statistic covers small shifts (``a`` near 1) and large ones (``a`` near 0), so
    the scales share one false-alarm budget and the threshold is calibrated exactly, by
    the Brook-Evans chain on the in-control law of the mixture increment (``-log p`` is
    Exp(1) and the increment is monotone in it).

    >>> det = MixtureCusum(mean_samples_between_false_alarms=500)
    >>> det.config["a"]
    [0.1, 0.25, 0.5, 0.75]
    >>> round(average_run_length(det._law_key(), det.threshold))
    500
    >>> det.update([0.5] * 10 + [1e-3] * 3)
    >>> det.drift_detected, det.alarm_index
    (True, 11)
    """

    name = "mixture_cusum"

    def __init__(
        self,
        mean_samples_between_false_alarms: float = 1000.0,
        *,
        a: Any = _DEFAULT_MIX_A,
        weights: Any = None,
        reset_on_alarm: bool = True,
        n_calibration: int | None = None,
    ) -> None:
        self._a, self._w = _check_mixture(a, weights)
        super().__init__(
            mean_samples_between_false_alarms,
            reset_on_alarm=reset_on_alarm,
            n_calibration=n_calibration,
        )

    def _law_key(self) -> tuple[Any, ...]:
        return ("mixture", self._a, self._w)

    def _increments(self, p: NDArray[np.float64]) -> NDArray[np.float64]:
        return log_mixture_lr(-np.log(p), self._a, self._w)

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "a": list(self._a), "weights": list(self._w)}


DETECTORS: dict[str, Callable[..., ChangeDetector]] = {
    BetaCusum.name: BetaCusum,
    ProbitCusum.name: ProbitCusum,
    MixtureCusum.name: MixtureCusum,
}


def make_detector(name: str, **cfg: Any) -> ChangeDetector:
    """A change detector by plug-in name.

    >>> make_detector("cusum", mean_samples_between_false_alarms=200).name
    'cusum'
    >>> make_detector("adwin")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    regulator.errors.UnknownNameError: unknown detector 'adwin'; valid: cusum, mixture_cusum, ...
    """
    return make_plugin("detector", DETECTORS, name, **cfg)


__all__ = [
    "DETECTORS",
    "BetaCusum",
    "ChangeDetector",
    "CusumDetector",
    "MixtureCusum",
    "ProbitCusum",
    "RecursiveDetector",
    "average_run_length",
    "make_detector",
]
