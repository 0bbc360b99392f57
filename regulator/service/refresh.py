"""Label-free refresh: when to re-normalise again, label-free, as unlabelled samples of
a new environment accrue in a drift episode (``recalibration.label_free_refresh_factor``).

A detection starts the count at the detector's change-point estimate. A refresh is due
once the samples served since the change point reach :data:`FIRST` and then ``factor``
times the window of the episode's last label-free attempt (a refresh or a stopgap,
accepted or not), until a window has reached ``cap``; each window holds the newest
samples since the change point, never one before it. A label-free candidate swapped in
keeps the count (the environment is the same, though the episode monitor restarts); a
rollback, or the episode ending without a swap, stops it.

A model adapted with labels is never refreshed: its labels set its input scaling (a
prior with episodic normalisation fits it on the shots), which a label-free candidate
would replace while looking in-distribution — measured on the gas-drift replay, a
refresh of a batch's labelled model passed the OOD check and served batch 2 at 0.885
instead of 0.979. So a labelled model served ends the refreshes until a label-free one
serves again.

>>> from regulator.service.episode import DriftEpisodes
>>> ep, r = DriftEpisodes(), LabelFreeRefresh(labelled=False)
>>> _ = ep.observe(alarms=1, first_alarm_sample=101, n_samples=110, t_s=5.0)
>>> [r.take(ep, n, factor=2.0, cap=100) for n in (120, 140, 170, 180, 400, 900)]
[None, 40, None, 80, 100, None]
>>> r.change_sample
101
>>> r.served(ep, labelled=True); ep.reset()  # a labelled model serves
>>> _ = ep.observe(alarms=1, first_alarm_sample=1500, n_samples=1510, t_s=75.0)
>>> r.take(ep, 1600, factor=2.0, cap=100) is None  # a new episode: still not refreshed
True
"""

from __future__ import annotations

import math
import threading

from regulator.errors import RegulatorError
from regulator.registry import Registry
from regulator.service.episode import DriftEpisodes

__all__ = ["FIRST", "LabelFreeRefresh", "adapted_with_labels"]

FIRST = 32
"""Samples since the change point at the first refresh of an episode."""


class LabelFreeRefresh:
    """The refresh count of the current drift episode (see the module docstring);
    ``labelled``: the model serving at start was adapted with labels."""

    def __init__(self, labelled: bool) -> None:
        self._lock = threading.Lock()  # ticks on the main loop, jobs on a worker
        self._episode: float | None = None  # since_t_s of the episode being followed
        self.change_sample: int | None = None  # where its environment began
        self._tried = 0  # window of the episode's last label-free attempt
        self._swapped = False  # a label-free candidate serves since the episode began
        self._over = True
        self._labelled = labelled  # the served model was adapted with labels

    def take(self, ep: DriftEpisodes, n_samples: int, factor: float, cap: int) -> int | None:
        """The window (samples) of a refresh due now, counted as attempted; None when
        none is due. ``n_samples``: samples served so far (sample numbers are 1-based)."""
        with self._lock:
            self._follow(ep)
            if self._over or self._labelled or self.change_sample is None:
                return None
            since = n_samples - self.change_sample + 1
            if since < max(FIRST, math.ceil(self._tried * factor)):
                return None
            self._tried = min(since, cap)
            self._over = self._tried >= cap
            return self._tried

    def attempted(self, ep: DriftEpisodes, window: int) -> None:
        """A label-free attempt on ``window`` samples by another trigger (a stopgap)."""
        with self._lock:
            self._follow(ep)
            self._tried = max(self._tried, window)

    def served(self, ep: DriftEpisodes, labelled: bool) -> None:
        """A candidate was swapped in (before the monitors restart): a labelled one ends
        the refreshes, a label-free one keeps the episode's going."""
        with self._lock:
            self._follow(ep)
            self._swapped = not labelled
            self._labelled = labelled
            self._over = self._over or labelled

    def rolled_back(self, labelled: bool) -> None:
        """A rollback to a model adapted with labels or not: no refresh until the next
        detection."""
        with self._lock:
            self._swapped, self._over, self._labelled = False, True, labelled

    def _follow(self, ep: DriftEpisodes) -> None:
        if ep.active:
            if ep.since_t_s != self._episode:  # a detection: a new environment
                self._episode, self._tried, self._swapped = ep.since_t_s, 0, False
                self._over = False
            if not self._swapped:
                self.change_sample = ep.change_sample
        elif not self._swapped:  # it ended without a swap
            self._over = True


def adapted_with_labels(registry: Registry, version: str) -> bool:
    """Whether ``version`` came from a supervised recalibration (its lineage)."""
    try:
        return registry.info(version).data_used.get("mode") == "supervised"
    except (RegulatorError, OSError, ValueError):
        return False
