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
from regulator.monitor.base import Monitor, check_float, check_positive_int, make_plugin

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
    def threshold(self) -> float:
        """The value of :attr:`statistic` at which an alarm is raised."""

    @property
    @abstractmethod
    def n_alarms(self) -> int:
        """Alarms raised since construction or ``reset()``."""


class RecursiveDetector(ChangeDetector):
    """A detector whose statistic follows a one-step recursion on transformed p-values.

    Subclasses give the increments ``x_t`` (:meth:`_increments`), the path of the
    statistic over a chunk of increments (:meth:`_path`) and the threshold; alarm when
    the statistic reaches the threshold. With ``reset_on_alarm`` (default) the statistic
    restarts after each alarm, so the mean number of samples between false alarms is
    ARL0; otherwise the alarm latches until :meth:`reset`.
    """

    #: the statistic's value at a (re)start, and the level at or below which the
    #: statistic counts as "no evidence" (the change-point estimate is the sample after)
    _start: float = 0.0
    _zero_level: float = 0.0

    def __init__(
        self,
        mean_samples_between_false_alarms: float = 1000.0,
        *,
        reset_on_alarm: bool = True,
        n_calibration: int | None = None,
    ) -> None:
        if n_calibration is not None:
            check_positive_int("n_calibration", n_calibration)
        self._n_cal = n_calibration
        self._arl0 = check_float(
            "mean_samples_between_false_alarms",
            mean_samples_between_false_alarms,
            low=2.0,
            high=1e9,
        )
        if not isinstance(reset_on_alarm, bool):
            raise ConfigError(f"reset_on_alarm must be true or false, got {reset_on_alarm!r}")
        self._reset_on_alarm = reset_on_alarm
        self._h = self._threshold_for(self._arl0)
        self.reset()

    # -- what a subclass defines -------------------------------------------------------

    @abstractmethod
    def _threshold_for(self, arl0: float) -> float:
        """The alarm threshold giving in-control ARL ``arl0`` (on the p-value grid of
        ``n_calibration`` calibration scores when that is set)."""

    @abstractmethod
    def _increments(self, p: NDArray[np.float64]) -> NDArray[np.float64]:
        """Per-sample increments for p-values ``p``."""

    @abstractmethod
    def _path(self, s0: float, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """The statistic after each increment of ``x``, starting from ``s0``."""

    # -- Monitor ---------------------------------------------------------------------------

    def reset(self) -> None:
        self._s = self._start
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
        p = np.asarray(p_values, dtype=np.float64)
        if p.ndim == 0:  # what np.atleast_1d does, without its dispatch on the serving path
            p = p.reshape(1)
        if p.ndim != 1:
            raise InputError(f"p-values must be a scalar or 1-D, got shape {p.shape}")
        if p.size and not (p.min() >= 0.0 and p.max() <= 1.0):  # a NaN fails both
            raise InputError("p-values must lie in [0, 1] (NaN is not a p-value)")
        self._last_alarms = []
        if not self._latched:
            self._detected = False
        if self._latched:
            self._n += p.size
            return
        x = self._increments(np.maximum(p, _P_FLOOR))
        if x.size == 1 and type(self)._path is CusumDetector._path:
            self._update_one(float(x[0]))
            return
        start = 0
        while start < x.size:
            stop = min(start + _CHUNK, x.size)
            s = self._path(self._s, x[start:stop])
            hit = (s >= self._h).nonzero()[0]
            end = stop if hit.size == 0 else start + int(hit[0]) + 1
            seg = s[: end - start]
            zeros = (seg <= self._zero_level).nonzero()[0]
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
            self._s = self._start
            self._last_zero = idx
            start = end
        self._n += p.size

    def _update_one(self, x: float) -> None:
        """One sample of Lindley's recursion in plain floats (the streaming case, where
        array calls would cost more than the arithmetic)."""
        s = max(self._s + x, 0.0)
        if s <= self._zero_level:
            self._last_zero = self._n
        if s >= self._h:
            idx = self._n
            self._n_alarms += 1
            self._alarm_index = idx
            self._change_index = self._last_zero + 1
            self._last_alarms.append(idx)
            self._detected = True
            if self._reset_on_alarm:
                self._s = self._start
                self._last_zero = idx
            else:
                self._latched = True
                self._s = s
        else:
            self._s = s
        self._n += 1

    @property
    def config(self) -> dict[str, Any]:
        return {
            "mean_samples_between_false_alarms": self._arl0,
            "reset_on_alarm": self._reset_on_alarm,
            "n_calibration": self._n_cal,
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
        """The detector's estimate of where the latest detected change began (sample index)."""
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


class CusumDetector(RecursiveDetector):
    """CUSUM on a transform of p-values, threshold calibrated from ARL0.

    ``S_t = max(0, S_{t-1} + x_t)``; alarm when ``S_t >= h``, ``h`` set by the
    Brook-Evans chain on the exact in-control law of the increments.
    """

    @abstractmethod
    def _law_key(self) -> tuple[Any, ...]:
        """Hashable description of the in-control increment law (for the cache)."""

    def _threshold_for(self, arl0: float) -> float:
        key = self._law_key()
        if self._n_cal is not None:
            key = ("conformal", self._n_cal, key)
        return _calibrate_threshold(key, arl0)

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


def _log_mixture_lr(
    u: NDArray[np.float64], a: tuple[float, ...], w: tuple[float, ...]
) -> NDArray[np.float64]:
    """``log sum_k w_k a_k p^(a_k - 1)`` at ``u = -log p``: the log likelihood ratio of
    the Beta mixture (``u`` is Exp(1) in control)."""
    u = np.asarray(u, dtype=np.float64).reshape(-1, 1)
    aa = np.asarray(a)[None, :]
    terms = np.log(np.asarray(w) * np.asarray(a))[None, :] + (1.0 - aa) * u
    out: NDArray[np.float64] = special.logsumexp(terms, axis=1)
    return out


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
        return _log_mixture_lr(-np.log(p), self._a, self._w)

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "a": list(self._a), "weights": list(self._w)}


# -- threshold calibration ---------------------------------------------------------------


def _increment_fn(key: tuple[Any, ...]) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
    """The CUSUM increment as a function of the p-value, for the law ``key``."""
    kind = key[0]
    if kind == "beta":
        a = float(key[1])
        return lambda p: math.log(a) - (1.0 - a) * np.log(p)
    if kind == "normal":
        d = float(key[1])
        return lambda p: d * -special.ndtri(np.minimum(p, 1.0 - 1e-16)) - 0.5 * d * d
    if kind == "mixture":
        a_t, w_t = tuple(key[1]), tuple(key[2])
        return lambda p: _log_mixture_lr(-np.log(p), a_t, w_t)
    raise ConfigError(f"unknown increment law {kind!r}; valid: beta, normal, mixture")


def _increment_cdf(key: tuple[Any, ...]) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
    """In-control CDF of the CUSUM increment described by ``key``.

    ``("conformal", n, inner)``: the increment of law ``inner`` evaluated at conformal
    p-values of ``n`` calibration scores, uniform on the grid ``k / (n + 1)``.
    """
    kind = key[0]
    if kind == "conformal":
        n = int(key[1])
        grid = np.arange(1, n + 2, dtype=np.float64) / (n + 1)
        vals = np.sort(_increment_fn(key[2])(grid))

        def cdf_grid(x: NDArray[np.float64]) -> NDArray[np.float64]:
            out: NDArray[np.float64] = np.searchsorted(vals, x, side="right") / vals.size
            return out

        return cdf_grid
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
    if kind == "mixture":
        # x = log L(p) is increasing in u = -log p ~ Exp(1): F(x) = 1 - exp(-u(x)),
        # u(x) by interpolation on a fine grid (L is nearly log-linear in u at both ends)
        a_t, w_t = tuple(key[1]), tuple(key[2])
        u = np.concatenate((np.linspace(0.0, 20.0, 4001), np.linspace(20.0, 800.0, 2000)[1:]))
        xs = _log_mixture_lr(u, a_t, w_t)

        def cdf_mixture(x: NDArray[np.float64]) -> NDArray[np.float64]:
            xx = np.asarray(x, dtype=np.float64)
            uu = np.interp(xx, xs, u, left=-1.0, right=u[-1])
            out: NDArray[np.float64] = np.where(xx < xs[0], 0.0, -np.expm1(-np.maximum(uu, 0.0)))
            return out

        return cdf_mixture
    raise ConfigError(f"unknown increment law {kind!r}; valid: beta, normal, mixture")


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
