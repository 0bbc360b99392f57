"""Data sources for the daemon, plug-ins by name, and delayed label feedback.

Every source yields :class:`SourceSample` (``sample_id``, ``x [C, L]`` float32, an
optional ``label``, ``t`` seconds since the source started). In a deployment labels
arrive later, if at all: :class:`FeedbackChannel` strips them from the samples and
hands them back ``delay`` samples later, for a ``fraction`` of the samples.

Sources: ``simulated`` (a task family with a shift schedule), ``replay`` (recorded
files, at ``rate_hz`` samples per second or as fast as possible) and ``http`` (a
bounded, thread-safe queue that the HTTP API pushes into).
"""

from __future__ import annotations

import collections
import queue
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from regulator.errors import ConfigError, InputError, UnknownNameError
from regulator.tasks.base import TaskFamily, make_family
from regulator.tasks.formats import load_file
from regulator.tasks.schedules import Schedule, Stream, make_schedule

__all__ = [
    "FeedbackChannel",
    "HttpSource",
    "ReplaySource",
    "SimulatedSource",
    "Source",
    "SourceSample",
    "make_source",
    "source_names",
]


@dataclass(frozen=True)
class SourceSample:
    """One input sample: ``x [C, L]`` float32; ``label`` None once feedback is held back."""

    sample_id: str
    x: np.ndarray
    label: Any
    t: float


class Source(ABC):
    """An iterable of :class:`SourceSample`; ``close()`` ends the iteration early."""

    name: ClassVar[str]
    n_channels: int
    length: int

    @abstractmethod
    def __iter__(self) -> Iterator[SourceSample]:
        """Samples in arrival order."""

    def close(self) -> None:  # noqa: B027 - most sources have nothing to release
        """Stop producing samples (idempotent)."""


class _Paced:
    """Paces a loop at ``rate_hz`` (None: as fast as possible) on an injectable clock."""

    def __init__(
        self,
        rate_hz: float | None,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        if rate_hz is not None and rate_hz <= 0:
            raise ConfigError(f"rate_hz must be > 0 or None, got {rate_hz}")
        self.rate_hz, self.clock, self.sleep = rate_hz, clock, sleep
        self.t0: float | None = None

    def wait(self, i: int) -> float:
        """Sleep until sample ``i`` is due; return seconds since the first sample."""
        now = self.clock()
        if self.t0 is None:
            self.t0 = now
        if self.rate_hz is not None:
            due = self.t0 + i / self.rate_hz
            if due > now:
                self.sleep(due - now)
                now = due
        return now - self.t0


class SimulatedSource(Source):
    """Samples of a task family whose environment shifts on a schedule.

    ``family`` is a name (with ``family_config``) or a :class:`TaskFamily`;
    ``schedule`` a :class:`Schedule` or its config (``{"kind": "abrupt", ...}``).
    Sample ids are ``"sim-<index>"``; ``change_points`` are the true shift times.

    >>> src = SimulatedSource("navigation", {"kind": "none"}, seed=1, n=2)
    >>> [(s.sample_id, s.x.shape) for s in src]
    [('sim-0', (4, 32)), ('sim-1', (4, 32))]
    """

    name: ClassVar[str] = "simulated"

    def __init__(
        self,
        family: str | TaskFamily = "nanosensor",
        schedule: Schedule | dict[str, Any] | None = None,
        seed: int = 0,
        n: int | None = None,
        rate_hz: float | None = None,
        family_config: dict[str, Any] | None = None,
        start_nominal: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        fam = (
            family
            if isinstance(family, TaskFamily)
            else make_family(family, **(family_config or {}))
        )
        if schedule is None:
            schedule = {"kind": "none"}
        sched = schedule if isinstance(schedule, Schedule) else make_schedule(**schedule)
        self.family = fam
        self.n_channels, self.length = fam.n_channels, fam.length
        self.stream = Stream(
            fam, sched, np.random.default_rng(seed), n=n, start_nominal=start_nominal
        )
        self._pace = _Paced(rate_hz, clock, sleep)
        self._closed = threading.Event()

    def change_points(self, horizon: int | None = None) -> list[int]:
        """Ground-truth shift times (sample indices)."""
        return self.stream.change_points(horizon)

    def __iter__(self) -> Iterator[SourceSample]:
        for s in self.stream:
            if self._closed.is_set():
                return
            t = self._pace.wait(s.index)
            yield SourceSample(f"sim-{s.index}", s.x, s.y, t)

    def close(self) -> None:
        self._closed.set()


class ReplaySource(Source):
    """Recorded files, replayed in order, each sample exactly once.

    ``paths`` are loaded with :func:`regulator.tasks.formats.load_file` (``format``
    None: by extension) and must agree on ``[C, L]``. Sample ids are
    ``"<file stem>:<row>"``. ``rate_hz`` None replays as fast as possible.

    >>> import tempfile, os
    >>> from regulator.tasks.formats import save_npz
    >>> p = os.path.join(tempfile.mkdtemp(), "day1.npz")
    >>> save_npz(p, np.zeros((3, 2, 1)), np.array([0, 1, 0]))
    >>> [(s.sample_id, s.label) for s in ReplaySource([p])]
    [('day1:0', 0), ('day1:1', 1), ('day1:2', 0)]
    """

    name: ClassVar[str] = "replay"

    def __init__(
        self,
        paths: Sequence[str | Path],
        rate_hz: float | None = None,
        format: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if isinstance(paths, str | Path):
            paths = [paths]
        if not paths:
            raise ConfigError("replay needs at least one file")
        self.paths = [Path(p) for p in paths]
        self.files = [load_file(p, format) for p in self.paths]
        shapes = {d.x.shape[1:] for d in self.files}
        if len(shapes) != 1:
            raise InputError(f"replay files disagree on sample shape [C, L]: {sorted(shapes)}")
        self.n_channels, self.length = next(iter(shapes))
        self.format = format
        self._pace = _Paced(rate_hz, clock, sleep)
        self._closed = threading.Event()

    def __len__(self) -> int:
        return sum(len(d.y) for d in self.files)

    def __iter__(self) -> Iterator[SourceSample]:
        i = 0
        for path, data in zip(self.paths, self.files, strict=True):
            for row in range(len(data.y)):
                if self._closed.is_set():
                    return
                t = self._pace.wait(i)
                yield SourceSample(f"{path.stem}:{row}", data.x[row], data.y[row].item(), t)
                i += 1

    def close(self) -> None:
        self._closed.set()


class HttpSource(Source):
    """A bounded, thread-safe queue of pushed samples (the API's POST /v1/samples).

    :meth:`push` validates the shape and values and returns the sample id; it raises
    :class:`~regulator.errors.InputError` when the queue is full (``maxsize``) rather
    than block the HTTP handler. Iteration blocks for the next sample until
    :meth:`close`; :meth:`get` waits at most ``timeout`` seconds.

    >>> src = HttpSource(n_channels=2, length=1, maxsize=1)
    >>> src.push(np.zeros((2, 1)), sample_id="a")
    'a'
    >>> src.push(np.zeros((2, 1)))
    Traceback (most recent call last):
    ...
    regulator.errors.InputError: sample queue full (1 samples); retry later
    >>> src.get(timeout=0).sample_id
    'a'
    """

    name: ClassVar[str] = "http"

    def __init__(
        self,
        n_channels: int,
        length: int,
        maxsize: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if n_channels < 1 or length < 1 or maxsize < 1:
            raise ConfigError("http source needs n_channels, length and maxsize >= 1")
        self.n_channels, self.length, self.maxsize = n_channels, length, maxsize
        self._queue: queue.Queue[SourceSample] = queue.Queue(maxsize=maxsize)
        self._clock = clock
        self._t0 = clock()
        self._closed = threading.Event()

    def push(self, x: Any, sample_id: str | None = None, t: float | None = None) -> str:
        """Queue one sample ``x [C, L]``; return its id (a fresh uuid4 hex when None).
        ``t``: its time stamp in seconds (default: seconds since this source began)."""
        if self._closed.is_set():
            raise InputError("source is closed", "queue_full")
        arr = np.asarray(x, dtype=np.float32)
        if arr.shape != (self.n_channels, self.length):
            raise InputError(
                f"sample shape {arr.shape}, expected ({self.n_channels}, {self.length})",
                "bad_shape",
            )
        if not np.all(np.isfinite(arr)):
            raise InputError("sample has non-finite values", "non_finite")
        sid = sample_id if sample_id is not None else uuid.uuid4().hex
        try:
            when = self._clock() - self._t0 if t is None else float(t)
            self._queue.put_nowait(SourceSample(sid, arr, None, when))
        except queue.Full:
            raise InputError(
                f"sample queue full ({self.maxsize} samples); retry later", "queue_full"
            ) from None
        return sid

    def qsize(self) -> int:
        """Samples waiting (approximate under concurrency)."""
        return self._queue.qsize()

    def get(self, timeout: float | None = None) -> SourceSample | None:
        """The next sample, or None after ``timeout`` seconds (None: wait for ever)."""
        try:
            return self._queue.get(timeout=timeout) if timeout != 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def __iter__(self) -> Iterator[SourceSample]:
        while True:
            s = self.get(timeout=0.1)
            if s is not None:
                yield s
            elif self._closed.is_set():
                return

    def close(self) -> None:
        self._closed.set()


class FeedbackChannel:
    """Holds labels back and releases them ``delay`` samples later, for a ``fraction``.

    :meth:`wrap` yields the source's samples with ``label=None``; the label of a sample
    becomes available from :meth:`pop_ready` once ``delay`` further samples have
    passed (``delay`` 0: right after the sample itself). Which samples get labelled is
    drawn from ``seed``.

    >>> fb = FeedbackChannel(delay=2, fraction=1.0)
    >>> samples = [SourceSample(str(i), np.zeros((1, 1)), i % 2, 0.0) for i in range(4)]
    >>> seen = []
    >>> for s in fb.wrap(samples):
    ...     seen.append((s.sample_id, s.label, fb.pop_ready()))
    >>> seen
    [('0', None, []), ('1', None, []), ('2', None, [('0', 0)]), ('3', None, [('1', 1)])]
    """

    def __init__(self, delay: int = 0, fraction: float = 1.0, seed: int = 0) -> None:
        if delay < 0 or not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"need delay >= 0 and 0 <= fraction <= 1, got {delay}, {fraction}")
        self.delay, self.fraction = int(delay), float(fraction)
        self._rng = np.random.default_rng(seed)
        self._pending: collections.deque[tuple[int, str, Any]] = collections.deque()
        self._count = 0
        self._lock = threading.Lock()

    def observe(self, sample: SourceSample) -> SourceSample:
        """Record ``sample``'s label (maybe) and return the sample without it."""
        with self._lock:
            i = self._count
            self._count += 1
            if sample.label is not None and self._rng.random() < self.fraction:
                self._pending.append((i + self.delay, sample.sample_id, sample.label))
        return replace(sample, label=None)

    def pop_ready(self) -> list[tuple[str, Any]]:
        """Labels that are due: ``(sample_id, label)`` pairs, oldest first."""
        out: list[tuple[str, Any]] = []
        with self._lock:
            now = self._count - 1
            while self._pending and self._pending[0][0] <= now:
                _, sid, label = self._pending.popleft()
                out.append((sid, label))
        return out

    def flush(self) -> list[tuple[str, Any]]:
        """Every label still held back (end of a replay)."""
        with self._lock:
            out = [(sid, label) for _, sid, label in self._pending]
            self._pending.clear()
        return out

    def wrap(self, samples: Iterable[SourceSample]) -> Iterator[SourceSample]:
        """``samples`` with labels held back (see :meth:`observe`)."""
        for s in samples:
            yield self.observe(s)


_SOURCES: dict[str, type[Source]] = {
    cls.name: cls for cls in (SimulatedSource, ReplaySource, HttpSource)
}


def source_names() -> list[str]:
    """Registered source names, sorted."""
    return sorted(_SOURCES)


def make_source(name: str, **config: Any) -> Source:
    """Build a data source by name ("simulated", "replay", "http").

    >>> make_source("http", n_channels=8, length=32).maxsize
    1024
    >>> make_source("kafka")
    Traceback (most recent call last):
    ...
    regulator.errors.UnknownNameError: unknown data source 'kafka'; valid: http, replay, simulated
    """
    try:
        cls = _SOURCES[name]
    except KeyError:
        raise UnknownNameError("data source", name, _SOURCES) from None
    try:
        return cls(**config)
    except TypeError as exc:
        raise ConfigError(f"bad configuration for data source {name!r}: {exc}") from exc
