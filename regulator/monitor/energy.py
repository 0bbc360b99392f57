"""Energy and power, from the joules the chip's energy model reports.

This monitor does not compute energy (``regulator.chip.energy`` does); it accumulates
the joules it is given, splits inference from learning, and turns them into watts over
a sliding time window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from regulator.errors import InputError
from regulator.monitor.base import Monitor, check_float


class EnergyMonitor(Monitor):
    """Joules per inference, watts at the observed rate, inference vs learning, totals.

    Each ``update(inference_j, learning_j, t_s, n_inferences)`` reports the energy spent
    since the previous update, at time ``t_s`` (seconds, non-decreasing). Power is the
    energy reported in the last ``window_s`` seconds divided by the time it covers;
    it is 0 until two updates span a positive time.

    >>> m = EnergyMonitor(window_s=10.0)
    >>> m.update(inference_j=0.0, t_s=0.0, n_inferences=0)
    >>> m.update(inference_j=2e-6, learning_j=1e-6, t_s=1.0, n_inferences=4)
    >>> m.update(inference_j=2e-6, t_s=2.0, n_inferences=4)
    >>> [round(v * 1e6, 6) for v in (m.power_w, m.inference_power_w, m.joules_per_inference)]
    [2.5, 2.0, 0.5]
    """

    kind = "energy"

    def __init__(self, window_s: float = 60.0) -> None:
        self._window_s = check_float("window_s", window_s, low=0.0, low_open=True)
        self.reset()

    def reset(self) -> None:
        self._inf_total = 0.0
        self._learn_total = 0.0
        self._n_inf = 0
        self._t_last: float | None = None
        # (t_s, inference_j, learning_j, n_inferences); the oldest entry marks the start
        self._events: deque[tuple[float, float, float, int]] = deque()

    def update(
        self,
        inference_j: float,
        learning_j: float = 0.0,
        t_s: float = 0.0,
        n_inferences: int = 1,
    ) -> None:
        """Energy (joules) spent since the previous update, reported at time ``t_s``."""
        inf = float(inference_j)
        lrn = float(learning_j)
        t = float(t_s)
        if not (inf >= 0.0 and lrn >= 0.0) or inf == float("inf") or lrn == float("inf"):
            raise InputError("energies must be finite and non-negative joules")
        if t != t or abs(t) == float("inf"):
            raise InputError("t_s must be a finite time in seconds")
        if self._t_last is not None and t < self._t_last:
            raise InputError(f"time went backwards: {t} s after {self._t_last} s")
        if isinstance(n_inferences, bool) or int(n_inferences) != n_inferences or n_inferences < 0:
            raise InputError(f"n_inferences must be an integer >= 0, got {n_inferences!r}")
        self._inf_total += inf
        self._learn_total += lrn
        self._n_inf += int(n_inferences)
        self._t_last = t
        self._events.append((t, inf, lrn, int(n_inferences)))
        # keep one entry at or before the window start, as the start marker
        while len(self._events) >= 2 and self._events[1][0] <= t - self._window_s:
            self._events.popleft()

    def _window(self) -> tuple[float, float, float, int]:
        """(span seconds, inference J, learning J, inferences) over the window."""
        if len(self._events) < 2:
            return 0.0, 0.0, 0.0, 0
        t0 = self._events[0][0]
        rest = list(self._events)[1:]
        span = self._events[-1][0] - t0
        return (
            span,
            sum(e[1] for e in rest),
            sum(e[2] for e in rest),
            sum(e[3] for e in rest),
        )

    # results

    @property
    def inference_j_total(self) -> float:
        return self._inf_total

    @property
    def learning_j_total(self) -> float:
        return self._learn_total

    @property
    def energy_j_total(self) -> float:
        return self._inf_total + self._learn_total

    @property
    def n_inferences(self) -> int:
        return self._n_inf

    @property
    def joules_per_inference(self) -> float:
        """Inference joules per inference since reset (0 before any inference)."""
        return self._inf_total / self._n_inf if self._n_inf else 0.0

    @property
    def inference_power_w(self) -> float:
        span, inf, _, _ = self._window()
        return inf / span if span > 0 else 0.0

    @property
    def learning_power_w(self) -> float:
        span, _, lrn, _ = self._window()
        return lrn / span if span > 0 else 0.0

    @property
    def power_w(self) -> float:
        """Total watts over the window (inference plus learning)."""
        span, inf, lrn, _ = self._window()
        return (inf + lrn) / span if span > 0 else 0.0

    @property
    def inference_rate_hz(self) -> float:
        span, _, _, n = self._window()
        return n / span if span > 0 else 0.0

    @property
    def config(self) -> dict[str, Any]:
        return {"window_s": self._window_s}

    def summary(self) -> dict[str, Any]:
        return {
            "inference_j_total": self.inference_j_total,
            "learning_j_total": self.learning_j_total,
            "energy_j_total": self.energy_j_total,
            "n_inferences": self.n_inferences,
            "joules_per_inference": self.joules_per_inference,
            "power_w": self.power_w,
            "inference_power_w": self.inference_power_w,
            "learning_power_w": self.learning_power_w,
            "inference_rate_hz": self.inference_rate_hz,
        }

    def _get_state(self) -> dict[str, Any]:
        return {
            "inf_total": self._inf_total,
            "learn_total": self._learn_total,
            "n_inf": self._n_inf,
            "t_last": self._t_last,
            "events": [list(e) for e in self._events],
        }

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._inf_total = float(state["inf_total"])
        self._learn_total = float(state["learn_total"])
        self._n_inf = int(state["n_inf"])
        self._t_last = None if state["t_last"] is None else float(state["t_last"])
        self._events = deque(
            (float(t), float(i), float(lr), int(n)) for t, i, lr, n in state["events"]
        )
