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
"""

from __future__ import annotations

import functools
import math
from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from regulator.errors import ConfigError, InputError
from regulator.monitor.base import Monitor, check_float, make_plugin

_CHUNK = 4096
_P_FLOOR = 1e-300


class ChangeDetector(Monitor):
    """Base of sequential change detectors fed with p-values in (0, 1].

    Results: ``drift_detected`` (an alarm during the last ``update``), ``alarm_index``
    (0-based index, counted since construction or ``reset()``, of the sample that raised
    the latest alarm), ``statistic``, ``threshold``, ``n_seen``, ``n_alarms``.
    """

    kind = "detector"
    name: str = ""

    @property
    @abstractmethod
    def drift_detected(self) -> bool:
        """Whether the last ``update`` raised an alarm (or, latched, one is pending)."""

    @property
    @abstractmethod
    def alarm_index(self) -> int | None:
        """Index of the sample that raised the latest alarm, or None."""

    @property
    @abstractmethod
    def statistic(self) -> float:
        """Current value of the detection statistic."""

    @property
    @abstractmethod
    def n_alarms(self) -> int:
        """Alarms raised since construction or ``reset()``."""


class CusumDetector(ChangeDetector):
    """CUSUM on a transform of p-values, threshold calibrated from ARL0.

    ``S_t = max(0, S_{t-1} + x_t)``; alarm when ``S_t >= h``. With
    ``reset_on_alarm`` (default) the statistic restarts at 0 after each alarm, so the
    mean number of samples between false alarms is ARL0; otherwise the alarm latches
    until :meth:`reset`.
    """

    def __init__(
        self, mean_samples_between_false_alarms: float = 1000.0, *, reset_on_alarm: bool = True
    ) -> None:
        self._arl0 = check_float(
            "mean_samples_between_false_alarms",
            mean_samples_between_false_alarms,
            low=2.0,
            high=1e9,
        )
        if not isinstance(reset_on_alarm, bool):
            raise ConfigError(f"reset_on_alarm must be true or false, got {reset_on_alarm!r}")
        self._reset_on_alarm = reset_on_alarm
        self._h = _calibrate_threshold(self._law_key(), self._arl0)
        self.reset()

    # -- what a subclass defines -------------------------------------------------------

    @abstractmethod
    def _law_key(self) -> tuple[Any, ...]:
        """Hashable description of the in-control increment law (for the cache)."""

    @abstractmethod
    def _increments(self, p: NDArray[np.float64]) -> NDArray[np.float64]:
        """CUSUM increments for p-values ``p``."""

    # -- Monitor ---------------------------------------------------------------------------

    def reset(self) -> None:
        self._s = 0.0
        self._n = 0
        self._n_alarms = 0
        self._alarm_index: int | None = None
        self._change_index: int | None = None
        self._last_zero = -1
        self._detected = False
        self._latched = False
        self._last_alarms: list[int] = []

    def update(self, p_values: ArrayLike) -> None:
        """Consume one p-value or a 1-D batch of them, in stream order."""
        p = np.atleast_1d(np.asarray(p_values, dtype=np.float64))
        if p.ndim != 1:
            raise InputError(f"p-values must be a scalar or 1-D, got shape {p.shape}")
        if p.size and not (np.all(p >= 0.0) and np.all(p <= 1.0)):
            raise InputError("p-values must lie in [0, 1] (NaN is not a p-value)")
        self._last_alarms = []
        if not self._latched:
            self._detected = False
        if self._latched:
            self._n += p.size
            return
        x = self._increments(np.maximum(p, _P_FLOOR))
        start = 0
        while start < x.size:
            stop = min(start + _CHUNK, x.size)
            c = self._s + np.cumsum(x[start:stop])
            s = c - np.minimum(np.minimum.accumulate(c), 0.0)  # Lindley's recursion
            hit = np.flatnonzero(s >= self._h)
            end = stop if hit.size == 0 else start + int(hit[0]) + 1
            seg = s[: end - start]
            zeros = np.flatnonzero(seg <= 0.0)
            if zeros.size:
                self._last_zero = self._n + start + int(zeros[-1])
            if hit.size == 0:
                self._s = float(seg[-1])
                start = stop
                continue
            idx = self._n + end - 1
            self._n_alarms += 1
            self._alarm_index = idx
            self._change_index = self._last_zero + 1
            self._last_alarms.append(idx)
            self._detected = True
            if not self._reset_on_alarm:
                self._latched = True
                self._s = float(seg[-1])
                break
            self._s = 0.0
            self._last_zero = idx
            start = end
        self._n += p.size

    @property
    def config(self) -> dict[str, Any]:
        return {
            "mean_samples_between_false_alarms": self._arl0,
            "reset_on_alarm": self._reset_on_alarm,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "drift_detected": self.drift_detected,
            "alarm_index": self.alarm_index,
            "change_index": self.change_index,
            "statistic": self.statistic,
            "threshold": self.threshold,
            "n_seen": self.n_seen,
            "n_alarms": self.n_alarms,
        }

    def _get_state(self) -> dict[str, Any]:
        return {
            "s": self._s,
            "n": self._n,
            "n_alarms": self._n_alarms,
            "alarm_index": self._alarm_index,
            "change_index": self._change_index,
            "last_zero": self._last_zero,
            "detected": self._detected,
            "latched": self._latched,
            "last_alarms": list(self._last_alarms),
        }

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._s = float(state["s"])
        self._n = int(state["n"])
        self._n_alarms = int(state["n_alarms"])
        self._alarm_index = None if state["alarm_index"] is None else int(state["alarm_index"])
        self._change_index = None if state["change_index"] is None else int(state["change_index"])
        self._last_zero = int(state["last_zero"])
        self._detected = bool(state["detected"])
        self._latched = bool(state["latched"])
        self._last_alarms = [int(i) for i in state["last_alarms"]]

    # -- results ---------------------------------------------------------------------------

    @property
    def drift_detected(self) -> bool:
        return self._detected

    @property
    def alarm_index(self) -> int | None:
        return self._alarm_index

    @property
    def alarm_indices(self) -> tuple[int, ...]:
        """Indices of every alarm raised during the last ``update`` (a batch may hold several)."""
        return tuple(self._last_alarms)

    @property
    def change_index(self) -> int | None:
        """CUSUM's estimate of where the latest detected change began (sample index)."""
        return self._change_index

    @property
    def statistic(self) -> float:
        return self._s

    @property
    def threshold(self) -> float:
        """The threshold ``h`` calibrated from ``mean_samples_between_false_alarms``."""
        return self._h

    @property
    def n_seen(self) -> int:
        """Samples consumed since construction or ``reset()``."""
        return self._n

    @property
    def n_alarms(self) -> int:
        """Alarms raised since construction or ``reset()``."""
        return self._n_alarms

    @property
    def mean_samples_between_false_alarms(self) -> float:
        return self._arl0


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
    ) -> None:
        self._a = check_float("a", a, low=0.0, high=1.0, low_open=True, high_open=True)
        super().__init__(mean_samples_between_false_alarms, reset_on_alarm=reset_on_alarm)

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
    ) -> None:
        self._delta = check_float("delta", delta, low=0.0, high=20.0, low_open=True)
        super().__init__(mean_samples_between_false_alarms, reset_on_alarm=reset_on_alarm)

    def _law_key(self) -> tuple[Any, ...]:
        return ("normal", self._delta)

    def _increments(self, p: NDArray[np.float64]) -> NDArray[np.float64]:
        z = -special.ndtri(np.minimum(p, 1.0 - 1e-16))  # p = 1 is common: keep z finite
        out: NDArray[np.float64] = self._delta * z - 0.5 * self._delta**2
        return out

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "delta": self._delta}


# -- threshold calibration ---------------------------------------------------------------


def _increment_cdf(key: tuple[Any, ...]) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
    """In-control CDF of the CUSUM increment described by ``key``."""
    kind = key[0]
    if kind == "beta":
        a = float(key[1])
        la = math.log(a)

        def cdf_beta(x: NDArray[np.float64]) -> NDArray[np.float64]:
            y = np.maximum(x - la, 0.0) / (1.0 - a)
            out: NDArray[np.float64] = -np.expm1(-y)
            return out

        return cdf_beta
    if kind == "normal":
        # increment of a Gaussian CUSUM with LLR drift: N(-d^2/2, d^2) in control
        d = float(key[1])

        def cdf_normal(x: NDArray[np.float64]) -> NDArray[np.float64]:
            out: NDArray[np.float64] = special.ndtr((x + 0.5 * d * d) / d)
            return out

        return cdf_normal
    raise ConfigError(f"unknown increment law {kind!r}; valid: beta, normal")


def average_run_length(key: tuple[Any, ...], h: float, n_states: int = 300) -> float:
    """In-control ARL of a CUSUM with threshold ``h`` (Brook-Evans Markov chain).

    >>> round(average_run_length(("normal", 1.0), 4.389))
    500
    """
    cdf = _increment_cdf(key)
    w = 2.0 * h / (2 * n_states - 1)
    i = np.arange(n_states, dtype=np.float64)
    diff: NDArray[np.float64] = (i[None, :] - i[:, None]) * w  # target minus source level
    q = cdf(diff + w / 2) - cdf(diff - w / 2)
    q[:, 0] = cdf(np.asarray(w / 2 - i * w, dtype=np.float64))
    arl = np.linalg.solve(np.eye(n_states) - q, np.ones(n_states))
    return float(arl[0])


@functools.lru_cache(maxsize=128)
def _calibrate_threshold(key: tuple[Any, ...], arl0: float) -> float:
    """Smallest-error threshold h with in-control ARL equal to ``arl0`` (bisection)."""
    lo, hi = 0.0, 1.0
    while average_run_length(key, hi) < arl0:
        lo, hi = hi, hi * 2.0
        if hi > 1e4:
            raise ConfigError(f"cannot reach mean_samples_between_false_alarms={arl0}")
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if average_run_length(key, mid) < arl0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-6 * hi:
            break
    return 0.5 * (lo + hi)


DETECTORS: dict[str, Callable[..., ChangeDetector]] = {
    BetaCusum.name: BetaCusum,
    ProbitCusum.name: ProbitCusum,
}


def make_detector(name: str, **cfg: Any) -> ChangeDetector:
    """A change detector by plug-in name.

    >>> make_detector("cusum", mean_samples_between_false_alarms=200).name
    'cusum'
    >>> make_detector("adwin")
    Traceback (most recent call last):
    ...
    regulator.errors.UnknownNameError: unknown detector 'adwin'; valid: cusum, probit_cusum
    """
    return make_plugin("detector", DETECTORS, name, **cfg)


__all__ = [
    "DETECTORS",
    "BetaCusum",
    "ChangeDetector",
    "CusumDetector",
    "ProbitCusum",
    "average_run_length",
    "make_detector",
]
