"""Shift schedules and the streams they drive.

A schedule says which environment is active at each sample index, and records the
ground-truth change times (sample indices) so detection delay and false alarms can be
measured. Environments are numbered 0, 1, 2, …; a :class:`Stream` draws environment
``k`` reproducibly from its seed (environment 0 is the family's nominal one unless told
otherwise) and samples one labelled sample per index.

Schedules:

- ``none``: environment 0 forever;
- ``abrupt``: a new environment at each change point (explicit, or ``every`` samples);
- ``gradual``: from each change point, a linear blend of the environment parameters
  over ``width`` samples into the next environment;
- ``recurring``: ``n_environments`` environments in turn, each for ``period`` samples.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from regulator.errors import ConfigError, UnknownNameError
from regulator.tasks.base import Environment, TaskFamily, interpolate

__all__ = [
    "AbruptShift",
    "GradualShift",
    "NoShift",
    "RecurringShift",
    "Schedule",
    "Stream",
    "StreamSample",
    "make_schedule",
    "schedule_names",
]


class Schedule(ABC):
    """Which environment is active at each sample index.

    :meth:`mix` returns ``(a, b, w)``: the parameters at that index are environment
    ``a``'s blended a fraction ``w`` towards environment ``b`` (``w == 0``: just ``a``).
    """

    name: ClassVar[str]

    @abstractmethod
    def mix(self, index: int) -> tuple[int, int, float]:
        """``(a, b, w)`` at sample ``index`` (0-based)."""

    @abstractmethod
    def change_points(self, horizon: int) -> list[int]:
        """Ground-truth change times: indices < ``horizon`` where a shift begins."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-able; ``make_schedule(**config)`` rebuilds this schedule."""

    def env_id(self, index: int) -> int | str:
        """The active environment's id: ``k``, or ``"a>b"`` while blending a into b."""
        a, b, w = self.mix(index)
        return a if w == 0.0 else f"{a}>{b}"


class NoShift(Schedule):
    """Environment 0 for ever.

    >>> NoShift().mix(10_000), NoShift().change_points(100)
    ((0, 0, 0.0), [])
    """

    name: ClassVar[str] = "none"

    def mix(self, index: int) -> tuple[int, int, float]:
        return (0, 0, 0.0)

    def change_points(self, horizon: int) -> list[int]:
        return []

    def config(self) -> dict[str, Any]:
        return {"kind": self.name}


def _points(change_points: Sequence[int] | None, every: int | None) -> tuple[tuple[int, ...], int]:
    if (change_points is None) == (every is None):
        raise ConfigError("give exactly one of change_points or every")
    if every is not None:
        if every < 1:
            raise ConfigError(f"every must be >= 1, got {every}")
        return (), int(every)
    pts = tuple(int(p) for p in change_points or ())
    if any(p < 1 for p in pts) or list(pts) != sorted(set(pts)):
        raise ConfigError(f"change_points must be increasing and >= 1, got {list(pts)}")
    return pts, 0


class AbruptShift(Schedule):
    """Jump to a new environment at each change point.

    >>> s = AbruptShift(change_points=[100, 250])
    >>> [s.env_id(i) for i in (0, 99, 100, 249, 250)], s.change_points(1000)
    ([0, 0, 1, 1, 2], [100, 250])
    >>> AbruptShift(every=50).change_points(160)
    [50, 100, 150]
    """

    name: ClassVar[str] = "abrupt"

    def __init__(
        self, change_points: Sequence[int] | None = None, every: int | None = None
    ) -> None:
        self.points, self.every = _points(change_points, every)

    def _segment(self, index: int) -> int:
        if self.every:
            return index // self.every
        return bisect.bisect_right(self.points, index)

    def mix(self, index: int) -> tuple[int, int, float]:
        k = self._segment(index)
        return (k, k, 0.0)

    def change_points(self, horizon: int) -> list[int]:
        if self.every:
            return list(range(self.every, horizon, self.every))
        return [p for p in self.points if p < horizon]

    def config(self) -> dict[str, Any]:
        if self.every:
            return {"kind": self.name, "every": self.every}
        return {"kind": self.name, "change_points": list(self.points)}


class GradualShift(Schedule):
    """From each change point, blend into the next environment over ``width`` samples.

    The change time is the first blended sample; from ``point + width`` on, the next
    environment holds unblended.

    >>> s = GradualShift(change_points=[100], width=3)
    >>> [s.mix(i) for i in (99, 100, 102, 103)], s.env_id(101)
    ([(0, 0, 0.0), (0, 1, 0.25), (0, 1, 0.75), (1, 1, 0.0)], '0>1')
    """

    name: ClassVar[str] = "gradual"

    def __init__(
        self,
        change_points: Sequence[int] | None = None,
        every: int | None = None,
        width: int = 100,
    ) -> None:
        self.points, self.every = _points(change_points, every)
        if width < 1:
            raise ConfigError(f"width must be >= 1, got {width}")
        gaps = np.diff((0, *self.points)) if self.points else [self.every]
        if min(gaps) < width:
            raise ConfigError(f"change points closer than width={width} overlap")
        self.width = int(width)

    def mix(self, index: int) -> tuple[int, int, float]:
        if self.every:
            k = index // self.every
            start = k * self.every
        else:
            k = bisect.bisect_right(self.points, index)
            start = self.points[k - 1] if k else 0
        if k == 0 or index - start >= self.width:
            return (k, k, 0.0)
        # Strictly between the two: w runs 1/(width+1) … width/(width+1).
        return (k - 1, k, (index - start + 1) / (self.width + 1))

    def change_points(self, horizon: int) -> list[int]:
        if self.every:
            return list(range(self.every, horizon, self.every))
        return [p for p in self.points if p < horizon]

    def windows(self, horizon: int) -> list[tuple[int, int]]:
        """``(start, end)`` of each blend starting before ``horizon`` (end exclusive)."""
        return [(p, p + self.width) for p in self.change_points(horizon)]

    def config(self) -> dict[str, Any]:
        base: dict[str, Any] = {"kind": self.name, "width": self.width}
        if self.every:
            return base | {"every": self.every}
        return base | {"change_points": list(self.points)}


class RecurringShift(Schedule):
    """``n_environments`` environments in turn, each for ``period`` samples.

    >>> s = RecurringShift(period=10, n_environments=2)
    >>> [s.env_id(i) for i in (0, 10, 20, 35)], s.change_points(40)
    ([0, 1, 0, 1], [10, 20, 30])
    """

    name: ClassVar[str] = "recurring"

    def __init__(self, period: int, n_environments: int = 2) -> None:
        if period < 1 or n_environments < 2:
            raise ConfigError("recurring needs period >= 1 and n_environments >= 2")
        self.period = int(period)
        self.n_environments = int(n_environments)

    def mix(self, index: int) -> tuple[int, int, float]:
        k = (index // self.period) % self.n_environments
        return (k, k, 0.0)

    def change_points(self, horizon: int) -> list[int]:
        return list(range(self.period, horizon, self.period))

    def config(self) -> dict[str, Any]:
        return {"kind": self.name, "period": self.period, "n_environments": self.n_environments}


_SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls for cls in (NoShift, AbruptShift, GradualShift, RecurringShift)
}


def schedule_names() -> list[str]:
    """Registered schedule kinds, sorted."""
    return sorted(_SCHEDULES)


def make_schedule(kind: str, **config: Any) -> Schedule:
    """Build a schedule by kind ("none", "abrupt", "gradual", "recurring").

    >>> make_schedule("abrupt", change_points=[5]).change_points(10)
    [5]
    """
    try:
        cls = _SCHEDULES[kind]
    except KeyError:
        raise UnknownNameError("shift schedule", kind, _SCHEDULES) from None
    try:
        return cls(**config)
    except TypeError as exc:
        raise ConfigError(f"bad configuration for schedule {kind!r}: {exc}") from exc


@dataclass(frozen=True)
class StreamSample:
    """One labelled sample of a stream: ``x [C, L]`` float32, its label, and the
    environment that produced it (``k``, or ``"a>b"`` during a gradual blend)."""

    index: int
    x: np.ndarray
    y: Any
    env_id: int | str


class Stream:
    """Samples of ``family`` one at a time, with environments following ``schedule``.

    Environment ``k`` is ``family.environment_from_seed(seed_k)`` with ``seed_k`` drawn
    once from ``rng`` (or the nominal environment for ``k = 0`` when ``start_nominal``),
    so the same generator state gives the same stream. ``n`` None means endless.

    >>> from regulator.tasks.base import make_family
    >>> fam = make_family("nanosensor", n_sensors=2, length=4)
    >>> st = Stream(fam, AbruptShift(change_points=[2]), np.random.default_rng(0), n=4)
    >>> [(s.index, s.env_id, s.x.shape) for s in st]
    [(0, 0, (2, 4)), (1, 0, (2, 4)), (2, 1, (2, 4)), (3, 1, (2, 4))]
    """

    def __init__(
        self,
        family: TaskFamily,
        schedule: Schedule,
        rng: np.random.Generator,
        n: int | None = None,
        start_nominal: bool = True,
    ) -> None:
        if n is not None and n < 0:
            raise ConfigError(f"n must be >= 0 or None, got {n}")
        self.family = family
        self.schedule = schedule
        self.n = n
        self.start_nominal = start_nominal
        self._rng = rng
        self._env_seed = int(rng.integers(0, 2**31 - 1))
        self._envs: dict[int, Environment] = {}
        self._blend: tuple[int, int, float, Environment] | None = None

    def environment(self, k: int) -> Environment:
        """Environment number ``k`` of this stream (drawn once, then cached)."""
        if k not in self._envs:
            if k == 0 and self.start_nominal:
                self._envs[k] = self.family.nominal_environment()
            else:
                seed = int(np.random.default_rng([self._env_seed, k]).integers(0, 2**31 - 1))
                self._envs[k] = self.family.environment_from_seed(seed)
        return self._envs[k]

    def environment_at(self, index: int) -> Environment:
        """The (possibly blended) environment active at sample ``index``."""
        a, b, w = self.schedule.mix(index)
        if w == 0.0:
            return self.environment(a)
        if self._blend is None or self._blend[:3] != (a, b, w):
            env = interpolate(self.environment(a), self.environment(b), w)
            self._blend = (a, b, w, env)
        return self._blend[3]

    def change_points(self, horizon: int | None = None) -> list[int]:
        """Ground-truth change times before ``horizon`` (default: the stream's length)."""
        h = horizon if horizon is not None else self.n
        if h is None:
            raise ConfigError("an endless stream needs an explicit horizon")
        return self.schedule.change_points(h)

    def __iter__(self) -> Iterator[StreamSample]:
        index = 0
        while self.n is None or index < self.n:
            env = self.environment_at(index)
            x, y = self.family.sample(env, 1, self._rng)
            label = y[0].item() if y.ndim == 1 else y[0]
            yield StreamSample(index, x[0], label, self.schedule.env_id(index))
            index += 1
