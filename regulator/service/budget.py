"""The recalibration budget: the hourly count of real work and the learning energy of
the current UTC day, both persisted in the state directory.

The day is the calendar day in UTC of the wall clock (seconds since the epoch; in a
replay, the simulated seconds), so the budget resets at midnight UTC whether or not a
recalibration runs then, and a restart on the same day starts from what was spent.

>>> b = LearningBudget(store=None)
>>> b.add(0.5, wall_s=86_400.0 * 3 + 10)
>>> b.today_j(wall_s=86_400.0 * 3 + 20), b.today_j(wall_s=86_400.0 * 4)
(0.5, 0.0)
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from typing import Protocol

__all__ = ["HourlyCount", "LearningBudget"]

log = logging.getLogger(__name__)

DAY_S = 86_400.0
HOUR_S = 3_600.0
_KEY = "learning_budget"
_HOURLY_KEY = "hourly_recalibrations"


class _Store(Protocol):
    def save(self, name: str, obj: object) -> bool: ...
    def load(self, name: str, default: object = None) -> object: ...


def utc_day(wall_s: float) -> int:
    """Days since 1970-01-01 UTC (the epoch has no leap seconds, so this is exact)."""
    return math.floor(wall_s / DAY_S)


class LearningBudget:
    """Joules of learning energy spent on the current UTC day (thread-safe)."""

    def __init__(self, store: _Store | None) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._day, self._joules = 0, 0.0
        saved = store.load(_KEY, default=None) if store is not None else None
        if isinstance(saved, dict):
            try:
                self._day, self._joules = int(saved["day"]), max(0.0, float(saved["joules"]))
            except (KeyError, TypeError, ValueError) as err:
                log.warning("learning budget not restored: %s", err)

    def today_j(self, wall_s: float) -> float:
        """Learning joules spent so far on the UTC day of ``wall_s``."""
        with self._lock:
            return self._joules if self._day == utc_day(wall_s) else 0.0

    def add(self, joules: float, wall_s: float) -> None:
        """Count ``joules`` on the UTC day of ``wall_s`` and persist the day's total."""
        day = utc_day(wall_s)
        with self._lock:
            self._joules = (self._joules if self._day == day else 0.0) + max(0.0, joules)
            self._day = day
            state = {"day": self._day, "joules": self._joules}
        if self._store is not None:
            self._store.save(_KEY, state)


class HourlyCount:
    """Start times of the recalibrations that did real work in the last hour: only those
    count against ``max_per_hour``. :meth:`take` checks the limit and counts the start
    in one step (thread-safe), so two starts at one moment cannot both pass it.

    Times are on the runtime's clock (``t_s``: monotonic in the daemon, simulated in a
    replay). Each start is persisted with its wall-clock time (seconds since the
    epoch), since the monotonic clock starts over with the process: a restart takes
    the starts of the last wall-clock hour back, at their age (clamped to 0 - 1 h if the
    wall clock jumped in between), so a restart does not reset the count.

    >>> h = HourlyCount(store=None, t_s=0.0, wall_s=0.0)
    >>> h.take(10.0, 10.0, limit=1), h.take(10.0, 10.0, limit=1), h.last_hour(3_610.0)
    (True, False, 0)
    """

    def __init__(self, store: _Store | None, t_s: float, wall_s: float) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._starts: deque[tuple[float, float]] = deque()  # (t_s, wall_s)
        saved = store.load(_HOURLY_KEY, default=None) if store is not None else None
        if saved is None:
            return
        try:
            if not isinstance(saved, dict):
                raise TypeError(f"not a mapping: {type(saved).__name__}")
            walls = sorted(float(w) for w in saved["wall_s"])
        except (KeyError, TypeError, ValueError) as err:
            log.warning("hourly recalibration count not restored: %s", err)
            return
        for w in walls:
            age = min(max(wall_s - w, 0.0), HOUR_S)
            if math.isfinite(age) and age < HOUR_S:
                self._starts.append((t_s - age, w))

    def take(self, t_s: float, wall_s: float, limit: int) -> bool:
        """Count a start at ``t_s`` if fewer than ``limit`` started in the hour before;
        False (nothing counted) if the limit is reached."""
        with self._lock:
            self._forget(t_s)
            if len(self._starts) >= limit:
                return False
            self._starts.append((t_s, wall_s))
            state = {"wall_s": [w for _, w in self._starts]}
        if self._store is not None:
            self._store.save(_HOURLY_KEY, state)
        return True

    def last_hour(self, t_s: float) -> int:
        """Starts in the hour before ``t_s``."""
        with self._lock:
            self._forget(t_s)
            return len(self._starts)

    def _forget(self, t_s: float) -> None:
        while self._starts and self._starts[0][0] <= t_s - HOUR_S:
            self._starts.popleft()
