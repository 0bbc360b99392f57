"""The one loop that drives a runtime, for ``regulator run`` and ``regulator replay``.

Each round serves a batch of samples (one chip forward), hands the labels that came due
to the label intake, and ticks the rules when ``tick_every_s`` of the runtime's clock has
passed. The daemon feeds it what its source delivered (wall clock); replay feeds it one
recorded sample at a time (simulated clock, one sample every ``1 / rate_hz``), so both
see the same order of serving, labels and decisions.

>>> class Rt:  # the part of a Runtime the loop uses
...     def __init__(self): self.t, self.ticks = 0.0, 0
...     def clock(self): return self.t
...     def process_batch(self, items, t=None, checked=False, defer=False):
...         return [{} for _ in items]
...     def flush(self): pass
...     def add_labels(self, items, t=None): return {"accepted": len(list(items))}
...     def tick(self, t=None): self.ticks += 1
>>> rt = Rt(); loop = ServiceLoop(rt, feedback=None, tick_every_s=0.5)
>>> for i in range(4):
...     rt.t = i * 0.25
...     _ = loop.serve([SourceSample(str(i), None, None, rt.t)])
>>> rt.ticks  # at t = 0 and t = 0.5
2

On a :class:`SampleClock` (a daemon whose ``source.clock`` is ``sample``) time moves only
with the samples and labels pushed to it, and the loop keeps replay's order although
labels come over HTTP after the samples they label: a round's tick is owed until
something later in time arrives (labels at the same ``t`` come first, as replay hands
them over before its tick), and a recalibration that a tick or labels started is waited
for before anything else is served (replay runs it inline: it takes no simulated time).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from regulator.errors import StorageFullError
from regulator.service.rows import Result
from regulator.tasks.sources import FeedbackChannel, SourceSample

__all__ = ["SETTLE_POLL_S", "TICK_EVERY_S", "SampleClock", "ServiceLoop"]

log = logging.getLogger(__name__)

TICK_EVERY_S = 0.5
"""Seconds of the runtime's clock between rule evaluations."""


SETTLE_POLL_S = 0.005  # how often a loop on the samples' clock looks at a running job


class SampleClock:
    """A clock that reads the samples' own time stamps (seconds), as replay's simulated
    time: a daemon's with ``source.clock: sample``. It never runs backwards.

    >>> clock = SampleClock()
    >>> clock.advance(2.5), clock.advance(1.0), clock.advance(None), clock()
    (2.5, 2.5, 2.5, 2.5)
    """

    def __init__(self, t_s: float = 0.0) -> None:
        self._t = t_s
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._t

    def advance(self, t_s: float | None) -> float:
        """Move to ``t_s`` if it is later (None: stay); return the time now."""
        with self._lock:
            if t_s is not None and t_s > self._t:
                self._t = float(t_s)
            return self._t


class _Runtime(Protocol):
    def clock(self) -> float: ...
    def process_batch(
        self,
        items: list[tuple[str, Any]],
        t: float | None = None,
        checked: bool = False,
        defer: bool = False,
    ) -> Sequence[Result]: ...
    def flush(self) -> None: ...
    def add_labels(self, items: Any, t: float | None = None) -> dict[str, Any]: ...
    def tick(self, t: float | None = None) -> Any: ...
    def recalibration_pending(self, key: str | None = None) -> bool: ...


class ServiceLoop:
    """Serve, deliver due labels, tick; see the module docstring.

    With ``clock`` (a :class:`SampleClock`), samples and labels may come from several
    threads (the main loop, HTTP handlers): each step holds the loop's lock, and a
    recalibration is waited for at most ``settle_s`` seconds."""

    def __init__(
        self,
        runtime: _Runtime,
        feedback: FeedbackChannel | None,
        tick_every_s: float = TICK_EVERY_S,
        checked: bool = False,
        clock: SampleClock | None = None,
        settle_s: float = 60.0,
    ) -> None:
        self.rt = runtime
        self.feedback = feedback
        self.checked = checked  # the source's samples were checked at the edge already
        self.tick_every_s = tick_every_s
        self.clock = clock
        self.settle_s = settle_s
        self._last_tick = -math.inf
        self._owed: float | None = None  # on a SampleClock: the time of the tick not run yet
        self._lock = threading.RLock()

    def serve(
        self, samples: Sequence[SourceSample], t: float | None = None, defer: bool = False
    ) -> Sequence[Result]:
        """One round: serve ``samples`` together, then labels, then maybe a tick (on a
        :class:`SampleClock`: owed, at ``t``, the latest of the samples' times).
        ``defer`` (wall clock only): more rounds follow at once, so the monitor updates
        may wait for :meth:`flush`, which must come before the results are handed on."""
        if self.clock is None:
            return self._round(samples, t, defer=defer)
        with self._lock:
            t = self._catch_up(t if t is not None else max((s.t for s in samples), default=None))
            outs = self._round(samples, t, tick=False)
            self._owed = t
            self._settle()  # a refinement that the labels due now started
            return outs

    def add_labels(self, items: Any, t: float | None = None) -> dict[str, Any]:
        """Labels from outside the loop (``POST /v1/feedback``) at time ``t`` (None: now),
        in the loop's order (see the module docstring)."""
        if self.clock is None:
            return self.rt.add_labels(items, t)
        with self._lock:
            t = self._catch_up(t)
            out = self.rt.add_labels(items, t)
            self._settle()
            return out

    def between_rounds(self) -> None:
        """The main loop's idle point: labels that came due and the tick, on the wall
        clock; nothing on a :class:`SampleClock`, where time moves only with the samples."""
        if self.clock is None:
            self.deliver_labels()
            self.maybe_tick()

    def flush(self) -> None:
        """The monitor updates that deferred rounds left (see :meth:`serve`)."""
        with self._lock:
            self.rt.flush()

    def _round(
        self,
        samples: Sequence[SourceSample],
        t: float | None,
        tick: bool = True,
        defer: bool = False,
    ) -> Sequence[Result]:
        fb = self.feedback
        seen = [fb.observe(s) for s in samples] if fb is not None else list(samples)
        items = [(s.sample_id, s.x) for s in seen]
        outs = self.rt.process_batch(items, t, self.checked, defer) if seen else []
        self.deliver_labels(t)
        if tick:
            self.maybe_tick(t)
        return outs

    def _catch_up(self, t: float | None) -> float:
        """Before anything at ``t``: the tick owed to an earlier time, and the job it
        started; then the clock moves to ``t`` (None: stays). Returns the time now."""
        assert self.clock is not None
        owed = self._owed
        if owed is not None and (t is None or t > owed):
            self._owed = None
            self.maybe_tick(owed)
            self._settle()
        return self.clock.advance(t)

    def _settle(self) -> None:
        """Wait for a queued or running recalibration (at most ``settle_s``)."""
        deadline = time.monotonic() + self.settle_s
        while self.rt.recalibration_pending():
            if time.monotonic() > deadline:
                log.warning("recalibration still running after %.0f s; serving on", self.settle_s)
                return
            time.sleep(SETTLE_POLL_S)

    def deliver_labels(self, t: float | None = None) -> None:
        """Labels that came due from the feedback channel, to the intake. On a full
        disk the guard counts and logs the refusal; serving goes on."""
        if self.feedback is None:
            return
        ready = self.feedback.pop_ready()
        if ready:
            self.rt.flush()  # the labels meet every prediction served before them
            with contextlib.suppress(StorageFullError):
                self.rt.add_labels([(sid, y, None) for sid, y in ready], t)

    def maybe_tick(self, t: float | None = None) -> None:
        """Evaluate the rules if ``tick_every_s`` passed since the last tick."""
        now = self.rt.clock() if t is None else t
        if now - self._last_tick < self.tick_every_s:
            return
        self._last_tick = now
        try:
            self.rt.tick(now)
        except OSError as err:  # a disk error must not end the loop
            log.error("tick: %s", err)
