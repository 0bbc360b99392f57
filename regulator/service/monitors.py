"""The monitor set of one device: energy, spike density, delayed-label accuracy, the
drift episodes of the served model's OOD monitor, and the window that explains a
detection. :meth:`MonitorSet.update` takes a block of served batches; :meth:`snapshot` is the
one read of every signal (rules, status, the scrape-time collector).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from regulator.monitor.accuracy import AccuracyMonitor
from regulator.monitor.density import SpikeDensityMonitor
from regulator.monitor.energy import EnergyMonitor
from regulator.policy.model import MonitorsConfig, Policy
from regulator.service.drift import DriftWindow
from regulator.service.episode import DriftEpisodes, Onset

if TYPE_CHECKING:
    from regulator.meta.model import Prediction
    from regulator.service.slot import Served

__all__ = [
    "RECENT_SAMPLES",
    "BlockOutcome",
    "MonitorSet",
    "ServedBatch",
    "Snapshot",
    "ood_threshold",
]

RECENT_SAMPLES = 4096
"""Predictions kept waiting for their labels (as many as the inputs kept for them)."""


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a) for a in parts])


@dataclass(slots=True)  # not frozen: made once per forward, and frozen init costs 6x
class ServedBatch:
    """One chip forward as the monitors see it: its model, prediction, inputs
    ``[n, C, L]``, sample ids, the samples served before it, its time (seconds) and
    how long the forward took (seconds). Not written to once made."""

    served: Served
    pred: Prediction
    batch: np.ndarray
    ids: list[str]
    n_before: int
    t_s: float
    forward_s: float = 0.0


@dataclass(frozen=True, slots=True)
class BlockOutcome:
    """What one :meth:`MonitorSet.update` found: the raw alarms, in serving order the
    detections (an :class:`Onset`) and ends of episodes (the sample number where it
    ended), and the block's OOD p-values (one per sample, in order)."""

    raw_alarms: int
    events: list[Onset | int]
    p_values: np.ndarray  # read-only


def ood_threshold(policy: Policy) -> float:
    """The OOD p-value below which a sample is called out-of-distribution: the first
    ``ood_pvalue_below`` rule's threshold, else 0.01."""
    for rule in policy.rules:
        thr = getattr(rule.condition, "threshold", None)
        if rule.condition.signal == "ood_pvalue_below" and thr is not None:
            return float(thr)
    return 0.01


@dataclass(frozen=True)
class Snapshot:
    """Every monitor signal at one moment (units: watts, joules, 0..1 fractions)."""

    accuracy: float | None
    mae: float | None
    labels_in_window: int
    ood_p_value: float | None  # latest sample's, with the exponential tail
    ood_mean_p_value: float | None
    ood_mean_tail_p_value: float | None
    drift_detected: bool  # the latched episode
    drift_statistic: float
    drift_threshold: float
    raw_alarms: int
    power_w: float | None  # None before two inferences
    energy_j_total: float
    inference_j_total: float
    learning_j_total: float
    spike_density: dict[str, float] = field(default_factory=dict)
    silent_layers: tuple[str, ...] = ()
    saturated_layers: tuple[str, ...] = ()


class MonitorSet:
    """The device's monitors; the OOD monitor itself belongs to the served model."""

    def __init__(self, cfg: MonitorsConfig, task_kind: str) -> None:
        self._task = task_kind
        # The main loop updates, HTTP threads add labels and scrapes read: one lock, held
        # for the monitors' own arithmetic only (never for a chip forward).
        self._lock = threading.RLock()
        self._energy_lock = threading.Lock()
        self._energy_t = -float("inf")
        self.episodes = DriftEpisodes()
        self.window = DriftWindow()
        self._build(cfg)

    def _build(self, cfg: MonitorsConfig) -> None:
        self.cfg = cfg
        self.energy = EnergyMonitor(window_s=cfg.power_window_s)
        self.density = SpikeDensityMonitor(
            window=cfg.spike_density_window_samples,
            silent_below=cfg.silent_threshold,
            saturated_above=cfg.saturated_threshold,
        )
        self.accuracy = AccuracyMonitor(
            window=cfg.accuracy_window_labels, task=self._task, max_pending=RECENT_SAMPLES
        )

    def apply(self, cfg: MonitorsConfig) -> None:
        """A reloaded policy's windows; monitors whose settings did not change keep
        their state."""
        with self._lock:
            self._apply(cfg)

    def _apply(self, cfg: MonitorsConfig) -> None:
        old = self.cfg
        energy, density, accuracy = self.energy, self.density, self.accuracy
        self._build(cfg)
        if cfg.power_window_s == old.power_window_s:
            self.energy = energy
        if (cfg.spike_density_window_samples, cfg.silent_threshold, cfg.saturated_threshold) == (
            old.spike_density_window_samples, old.silent_threshold, old.saturated_threshold
        ):  # fmt: skip
            self.density = density
        if cfg.accuracy_window_labels == old.accuracy_window_labels:
            self.accuracy = accuracy

    # -- updates -----------------------------------------------------------------------

    def update(self, block: list[ServedBatch], current: Served) -> BlockOutcome:
        """Batches served one after another by one model (a block: the serving path
        defers the monitors' work over a few batches, see :mod:`~regulator.service.
        inference`); every monitor is updated once for the whole block. Batches of a
        model no longer ``current`` (swapped out since) only get their p-values: their
        alarms, inputs and predictions say nothing about the model serving now."""
        with self._lock:
            return self._update(block, current)

    def _update(self, block: list[ServedBatch], current: Served) -> BlockOutcome:
        served = block[0].served
        ood = served.ood
        one = len(block) == 1
        first = block[0]
        hidden = first.pred.hidden_counts if one else _cat([b.pred.hidden_counts for b in block])
        outputs = first.pred.outputs if one else _cat([b.pred.outputs for b in block])
        n_total = len(hidden)
        alarms0 = ood.n_alarms
        ood.update(hidden, outputs)
        new = ood.n_alarms - alarms0
        p_values = ood.p_value_array
        if served is not current:
            return BlockOutcome(new, [], p_values)
        # the power window: the block's energy at its last batch's time (a block spans
        # at most DEFER_S, far below the window); the density window counts forwards
        self.report_energy(sum(b.pred.energy_j for b in block), 0.0, block[-1].t_s, n_total)
        for b in block:
            self.density.update(b.pred.telemetry)
        self.window.add(*(b.batch for b in block))
        ids = first.ids if one else [sid for b in block for sid in b.ids]
        labels = [np.asarray(b.pred.labels).reshape(len(b.ids), -1)[:, 0] for b in block]
        self.accuracy.record(ids, labels[0] if one else np.concatenate(labels))
        # global sample number = offset + detector index + 1
        offset = first.n_before + n_total - ood.n_seen
        alarm_samples = [offset + i + 1 for i in getattr(ood.detector, "alarm_indices", ())]
        events: list[Onset | int] = []
        for b in block:  # the episodes latch batch by batch, as each was served
            end = b.n_before + len(b.ids)
            mine = [s for s in alarm_samples if b.n_before < s <= end]
            onset = self.episodes.observe(len(mine), mine[0] if mine else end, end, b.t_s)
            if onset is not None:
                change = getattr(ood.detector, "change_index", None)
                if change is not None:
                    self.episodes.note_change_point(offset + int(change) + 1)
                events.append(onset)
            elif self.episodes.cleared:
                events.append(end)
        return BlockOutcome(new, events, p_values)

    def report_energy(self, inference_j: float, learning_j: float, t_s: float, n: int) -> None:
        """From either thread. A recalibration reports its learning energy at its start
        time, after serving moved on: clamp so the monitor never sees time go back."""
        with self._energy_lock:
            t_s = max(t_s, self._energy_t)
            self._energy_t = t_s
            self.energy.update(inference_j, learning_j, t_s, n_inferences=n)

    def label(self, ids: list[str], y: np.ndarray) -> None:
        """Labels of earlier predictions, for the accuracy window."""
        with self._lock:
            self.accuracy.label(ids, y)

    def swapped(self) -> None:
        """A new model serves: its episode, window and accuracy start afresh."""
        with self._lock:
            self.window.clear()
            self.accuracy.reset()
            self.episodes.reset()

    # -- reading -----------------------------------------------------------------------

    def snapshot(self, served: Served) -> Snapshot:
        with self._lock, self._energy_lock:
            return self._snapshot(served)

    def _snapshot(self, served: Served) -> Snapshot:
        ood, e, d, a = served.ood, self.energy, self.density, self.accuracy
        tail = ood.tail_p_values
        return Snapshot(
            accuracy=a.accuracy,
            mae=a.mae,
            labels_in_window=a.n_in_window,
            ood_p_value=tail[-1] if tail else None,
            ood_mean_p_value=ood.mean_p_value,
            ood_mean_tail_p_value=ood.mean_tail_p_value,
            drift_detected=self.episodes.active,
            drift_statistic=float(ood.statistic),
            drift_threshold=float(ood.detector.threshold),
            raw_alarms=int(ood.n_alarms),
            power_w=e.power_w if e.n_inferences > 1 else None,
            energy_j_total=e.energy_j_total,
            inference_j_total=e.inference_j_total,
            learning_j_total=e.learning_j_total,
            spike_density=dict(d.density),
            silent_layers=tuple(d.silent_layers),
            saturated_layers=tuple(d.saturated_layers),
        )

    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"accuracy": self.accuracy.state_dict()}
