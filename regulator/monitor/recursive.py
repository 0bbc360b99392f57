"""The change detectors' common machinery: :class:`ChangeDetector` (the plug-in
interface: update on p-values, alarm, change-point estimate, state for restarts) and
:class:`RecursiveDetector` (a statistic with a one-step recursion on transformed
p-values, updated over a batch in chunks, alarming at its threshold). The concrete
CUSUMs and their thresholds are in :mod:`regulator.monitor.detect`."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from regulator.errors import ConfigError, InputError
from regulator.monitor.base import Monitor, check_float, check_positive_int

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
    #: whether :meth:`_path` is Lindley's recursion ``max(s + x, 0)`` (the CUSUMs), so one
    #: sample takes the scalar step :meth:`_update_one`; a subclass with another path
    #: leaves it False
    _lindley: bool = False

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
        if x.size == 1 and self._lindley:
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
