"""Label-free refresh: when to re-normalise again, label-free, as unlabelled samples of
a new environment accrue in a drift episode (``recalibration.label_free_refresh_factor``).

A detection starts the count at the detector's change-point estimate. A refresh is due
once the samples served since the change point reach :data:`FIRST` and then ``factor``
times the window of the episode's last label-free attempt (a refresh or a stopgap,
accepted or not), until a window has reached ``cap``; each window holds the newest
samples since the change point, never one before it. A label-free candidate swapped in
keeps the count (the environment is the same, though the episode monitor restarts); a
labelled recalibration served, or the episode ending without a swap, stops it.

>>> from regulator.service.episode import DriftEpisodes
>>> ep, r = DriftEpisodes(), LabelFreeRefresh()
>>> _ = ep.observe(alarms=1, first_alarm_sample=101, n_samples=110, t_s=5.0)
>>> [r.take(ep, n, factor=2.0, cap=100) for n in (120, 140, 170, 180, 400, 900)]
[None, 40, None, 80, 100, None]
>>> r.change_sample
101
"""

from __future__ import annotations

import math

from regulator.service.episode import DriftEpisodes

__all__ = ["FIRST", "LabelFreeRefresh"]

FIRST = 32
"""Samples since the change point at the first refresh of an episode."""


class LabelFreeRefresh:
    """The refresh count of the current drift episode (see the module docstring)."""

    def __init__(self) -> None:
        self._episode: float | None = None  # since_t_s of the episode being followed
        self.change_sample: int | None = None  # where its environment began
        self._tried = 0  # window of the episode's last label-free attempt
        self._swapped = False  # a label-free candidate serves since the episode began
        self._over = True

    def take(self, ep: DriftEpisodes, n_samples: int, factor: float, cap: int) -> int | None:
        """The window (samples) of a refresh due now, counted as attempted; None when
        none is due. ``n_samples``: samples served so far (sample numbers are 1-based)."""
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
        self._follow(ep)
        self._tried = max(self._tried, window)

    def served(self, ep: DriftEpisodes, labelled: bool) -> None:
        """A candidate was swapped in (before the monitors restart): a labelled one ends
        the refreshes of this episode, a label-free one keeps them going."""
        self._follow(ep)
        self._swapped = not labelled
        self._over = self._over or labelled

    def _follow(self, ep: DriftEpisodes) -> None:
        if ep.active:
            if ep.since_t_s != self._episode:  # a detection: a new environment
                self._episode, self._tried, self._swapped, self._over = (
                    ep.since_t_s,
                    0,
                    False,
                    False,
                )
            if not self._swapped:
                self.change_sample = ep.change_sample
        elif not self._swapped:  # it ended without a swap (or a rollback ended it)
            self._over = True
