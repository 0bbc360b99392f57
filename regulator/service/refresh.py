"""Label-free refresh: when to re-normalise again, label-free, as unlabelled samples of
a new environment accrue in a drift episode (``recalibration.label_free_refresh_factor``).

A detection starts the count at the detector's change-point estimate. A refresh is due
once the samples served since the change point reach :data:`FIRST` and then ``factor``
times the window of the episode's last label-free attempt (a refresh or a stopgap,
accepted or not), until a window has reached ``cap``; each window holds the newest
samples since the change point, never one before it. A label-free candidate swapped in
keeps the count (the environment is the same, though the episode monitor restarts); a
labelled recalibration served, a rollback, or the episode ending without a swap stops
it. A model adapted with labels serves the environment it was adapted for: an episode
whose change point comes less than :data:`~regulator.service.episode.QUIET_SAMPLES`
samples after its swap (the fresh detector's first alarms) starts no refreshes.

>>> from regulator.service.episode import DriftEpisodes
>>> ep, r = DriftEpisodes(), LabelFreeRefresh()
>>> _ = ep.observe(alarms=1, first_alarm_sample=101, n_samples=110, t_s=5.0)
>>> [r.take(ep, n, factor=2.0, cap=100) for n in (120, 140, 170, 180, 400, 900)]
[None, 40, None, 80, 100, None]
>>> r.change_sample
101
>>> r.served(ep, labelled=True, n_samples=910); ep.reset()  # a labelled model serves
>>> _ = ep.observe(alarms=1, first_alarm_sample=930, n_samples=940, t_s=47.0)
>>> r.take(ep, 1200, factor=2.0, cap=100) is None  # its fresh detector: same environment
True
"""

from __future__ import annotations

import math
import threading

from regulator.service.episode import QUIET_SAMPLES, DriftEpisodes

__all__ = ["FIRST", "LabelFreeRefresh"]

FIRST = 32
"""Samples since the change point at the first refresh of an episode."""


class LabelFreeRefresh:
    """The refresh count of the current drift episode (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # ticks on the main loop, jobs on a worker
        self._episode: float | None = None  # since_t_s of the episode being followed
        self.change_sample: int | None = None  # where its environment began
        self._tried = 0  # window of the episode's last label-free attempt
        self._swapped = False  # a label-free candidate serves since the episode began
        self._over = True
        self._labelled_at = -(10**9)  # sample count at the last labelled swap

    def take(self, ep: DriftEpisodes, n_samples: int, factor: float, cap: int) -> int | None:
        """The window (samples) of a refresh due now, counted as attempted; None when
        none is due. ``n_samples``: samples served so far (sample numbers are 1-based)."""
        with self._lock:
            self._follow(ep)
            if self._over or self.change_sample is None:
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

    def served(self, ep: DriftEpisodes, labelled: bool, n_samples: int) -> None:
        """A candidate was swapped in after ``n_samples`` samples (before the monitors
        restart): a labelled one ends the refreshes of this episode, a label-free one
        keeps them going."""
        with self._lock:
            self._follow(ep)
            self._swapped = not labelled
            self._over = self._over or labelled
            if labelled:
                self._labelled_at = n_samples

    def stop(self) -> None:
        """A rollback: no refresh until the next detection."""
        with self._lock:
            self._swapped, self._over = False, True

    def _follow(self, ep: DriftEpisodes) -> None:
        if ep.active:
            if ep.since_t_s != self._episode:  # a detection: a new environment
                self._episode, self._tried, self._swapped = ep.since_t_s, 0, False
                change = ep.change_sample if ep.change_sample is not None else 0
                self._over = change - self._labelled_at < QUIET_SAMPLES
            if not self._swapped:
                self.change_sample = ep.change_sample
        elif not self._swapped:  # it ended without a swap
            self._over = True
