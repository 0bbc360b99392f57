"""Drift episodes: the one owner of latching.

The change detector alarms per sample and restarts after each alarm (CUSUM), so its own
flag flickers and its raw alarms come by the hundred in one shift. An *episode* starts
at the first alarm after a swap or after a quiet spell of :data:`QUIET_SAMPLES` samples
(a *detection*), stays latched while alarms keep coming, and ends at the next swap or
after ``5 x QUIET_SAMPLES`` samples without an alarm (the environment came back).
``regulator_drift_alarms_total`` counts detections; raw alarms have their own counter.

>>> ep = DriftEpisodes()
>>> ep.observe(alarms=3, first_alarm_sample=120, n_samples=130, t_s=6.0) is not None
True
>>> ep.observe(alarms=5, first_alarm_sample=131, n_samples=140, t_s=7.0) is None  # latched
True
>>> ep.active, ep.since_t_s, ep.change_sample
(True, 6.0, 120)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["QUIET_SAMPLES", "DriftEpisodes", "Onset"]

QUIET_SAMPLES = 200
"""Samples without an alarm that let the next alarm start a new episode."""
CLEAR_AFTER = 5 * QUIET_SAMPLES
"""Samples without an alarm that end an episode (the environment came back)."""


@dataclass(frozen=True)
class Onset:
    """A detection: the sample (1-based, counted since start) of the episode's first
    alarm, at time ``t_s``."""

    sample: int
    t_s: float


class DriftEpisodes:
    """Latches the detector's raw alarms into episodes (see the module docstring)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """A swap: the new model's detector starts afresh, so does the episode."""
        self.since_t_s: float | None = None  # start of the current episode
        self.change_sample: int | None = None  # the detector's change-point estimate
        self.cleared = False  # the latest observe() ended an episode
        self._last_alarm_sample = -(10**9)

    @property
    def active(self) -> bool:
        return self.since_t_s is not None

    def observe(
        self, alarms: int, first_alarm_sample: int, n_samples: int, t_s: float
    ) -> Onset | None:
        """One served batch with ``alarms`` raw alarms, the first at sample
        ``first_alarm_sample``, ``n_samples`` served so far. A detection if this batch
        starts an episode, else None."""
        self.cleared = False
        if alarms > 0:
            quiet = first_alarm_sample - self._last_alarm_sample > QUIET_SAMPLES
            self._last_alarm_sample = n_samples
            if self.since_t_s is None or quiet:
                self.since_t_s = t_s
                self.change_sample = first_alarm_sample
                return Onset(first_alarm_sample, t_s)
            return None
        if self.since_t_s is not None and n_samples - self._last_alarm_sample > CLEAR_AFTER:
            self.since_t_s = None
            self.cleared = True
        return None

    def note_change_point(self, sample: int) -> None:
        """The detector's own estimate of where the change began (sample number)."""
        self.change_sample = sample
