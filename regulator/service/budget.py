"""The recalibration budget: the hourly count of real work and the learning energy of
the current UTC day, persisted in the state directory.

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
    """Start times (seconds, the runtime's clock) of recalibrations that did real work
    in the last hour: only those count against ``max_per_hour``."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def note(self, t_s: float) -> None:
        with self._lock:
            self._times.append(t_s)

    def last_hour(self, t_s: float) -> int:
        with self._lock:
            while self._times and self._times[0] <= t_s - HOUR_S:
                self._times.popleft()
            return len(self._times)
