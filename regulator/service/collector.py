"""Gauges read at scrape time (STYLE §14): the serving path only increments counters
and observes histograms; every gauge of a monitor reads one snapshot, taken at most
once per scrape.

:func:`bind_gauges` points each gauge at a field of the latest
:class:`~regulator.service.monitors.Snapshot`; layer gauges are added as the layers are
first seen (:meth:`ScrapeCollector.ensure_layers`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from regulator.service.metrics import Metrics
from regulator.service.monitors import Snapshot
from regulator.service.storage import DiskGuard

__all__ = ["ScrapeCollector", "bind_storage_gauges"]

_FRESH_S = 0.05  # one snapshot serves every gauge of one scrape


def _num(x: float | None) -> float:
    return math.nan if x is None else float(x)


def bind_storage_gauges(metrics: Metrics, guard: DiskGuard, damaged: Callable[[], bool]) -> None:
    """Disk gauges read at scrape time; refused writes counted by what they were."""
    m = metrics
    guard.on_refuse = lambda what: m.storage_refused.labels(what=what).inc()
    for what in ("label", "event", "version", "monitors"):
        m.storage_refused.labels(what=what)
    m.state_bytes.set_function(lambda: float(guard.state_bytes()))
    m.disk_free_bytes.set_function(lambda: float(guard.free_bytes()))
    m.degraded.set_function(lambda: float(damaged() or guard.full))


class ScrapeCollector:
    """Binds the monitor gauges of ``metrics`` to ``snapshot()`` and the other live
    values the runtime passes in."""

    def __init__(
        self,
        metrics: Metrics,
        snapshot: Callable[[], Snapshot],
        chip_age_s: Callable[[], float],
        samples_needed: Callable[[], int],
        classifies: Callable[[], bool],
    ) -> None:
        self._snapshot = snapshot
        self._lock = threading.Lock()
        self._snap: Snapshot | None = None
        self._at = -math.inf
        self._layers: set[str] = set()
        self._metrics = metrics
        m = metrics
        m.power_watts.set_function(lambda: self.read().power_w or 0.0)
        m.ood_score.set_function(lambda: _num(self.read().ood_p_value))
        m.drift_statistic.set_function(lambda: self.read().drift_statistic)
        m.drift_threshold.set_function(lambda: self.read().drift_threshold)
        m.drift_detected.set_function(lambda: 1.0 if self.read().drift_detected else 0.0)

        def accuracy() -> float:
            s = self.read()
            return _num(s.accuracy if classifies() else s.mae)

        m.accuracy.set_function(accuracy)
        m.chip_age.set_function(chip_age_s)
        m.calibration_samples_needed.set_function(lambda: float(samples_needed()))

    def read(self) -> Snapshot:
        """The snapshot of this scrape (taken afresh when the last is older than 50 ms)."""
        now = time.monotonic()
        with self._lock:
            if self._snap is None or now - self._at > _FRESH_S:
                self._snap, self._at = self._snapshot(), now
            return self._snap

    def ensure_layers(self, names: tuple[str, ...]) -> None:
        """Gauges for layers not seen before (spike density, silent, saturated)."""
        m = self._metrics
        for name in names:
            if name in self._layers:
                continue
            self._layers.add(name)
            m.spike_density.labels(layer=name).set_function(self._density(name))
            m.layer_silent.labels(layer=name).set_function(self._flag(name, silent=True))
            m.layer_saturated.labels(layer=name).set_function(self._flag(name, silent=False))

    def _density(self, layer: str) -> Callable[[], float]:
        return lambda: self.read().spike_density.get(layer, math.nan)

    def _flag(self, layer: str, silent: bool) -> Callable[[], float]:
        def read() -> float:
            s = self.read()
            return 1.0 if layer in (s.silent_layers if silent else s.saturated_layers) else 0.0

        return read
