"""Turns between the serving path and background work in one process.

Why: a recalibration's own Python work in the serving process (splitting labels,
storing and loading the version, its bookkeeping, a few milliseconds) ran beside
inference on the same core (the worker process holds the other of two). Interleaved,
the two threads convoy on the interpreter lock: each of inference's torch calls gives
the lock up and waits for it back while the other thread runs Python, so one sample
could take 6-8x its usual time (``bench/daemon.py``, p99 during recalibrations).
Taking turns instead, a sample waits for at most the one step running when it came,
and the step runs without being interleaved.

- :meth:`Turns.serving`: the serving path's turn (one batch);
- :meth:`Turns.step`: a background step's turn; reentrant, and a nested step is a
  yield point (serving, if it waits, goes first);
- :func:`checkpoint`: a yield point inside long steps (loading a model, copying a
  version's files), for whichever thread holds a step;
- :meth:`Turns.outside` and :func:`fsync`: a blocking wait (the worker process, the
  disk) with the turn given up, so that serving never waits for a disk or a worker.

Serving goes first. A waiting step takes its turn once serving has been idle for
``idle_s`` (0.5 ms: at the daemon's usual load, between two batches), and, however busy
serving is, at least every ``step_every_s`` (0.2 s): under saturated serving a step's
piece (about 1 ms at most) delays at most one sample in 200 ms, 0.5 % of them, instead of
one in two, and a recalibration takes longer (its pieces wait) but always ends.

The rule that keeps this free of deadlock: a step gives its turn up only where it holds
no lock that the serving path takes (the monitor set, the label intake, the event log).
:meth:`Turns.pause` and :meth:`Turns.outside` are called where that is so;
:func:`checkpoint` and :func:`fsync`, called deep in shared code (atomic writes, model
folders), give the turn up only inside :meth:`Turns.yielding`, a region its caller
declares free of such locks (storing and loading a version). Elsewhere they do nothing
more than ``os.fsync``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Literal, TypeVar

__all__ = ["IDLE_S", "MAX_WAIT_S", "SLICE_S", "STEP_EVERY_S", "Turns", "checkpoint", "fsync"]

T = TypeVar("T")

log = logging.getLogger(__name__)

MAX_WAIT_S = 5.0
"""The longest either side waits for its turn. Past it, the side goes on without the
turn (logged and counted in ``Turns.overruns``): turns shape latency, and must never be
able to hang the daemon, whatever a caller holds."""

IDLE_S = 0.0005
"""How long serving must have been idle before a waiting step takes its turn: longer
than the gap between two batches of a saturated serving loop (microseconds), shorter
than the gaps at half load."""

STEP_EVERY_S = 0.2
"""However busy serving is, a step that has waited this long goes next: background work
is slowed by serving, never stopped by it."""

SLICE_S = 0.002
"""A step whose turn came as due keeps it through its yield points for this long, so
that it gets on (a recalibration has about 40 of them) while delaying one sample only."""

POLL_S = 0.005
"""How often a waiting step looks for serving's idle gap (between due times)."""

_local = threading.local()  # .turns: the Turns whose step this thread holds, in a
# region declared free of the serving path's locks (Turns.yielding), else None


class Turns:
    """One process's serving path and its background steps, taking turns."""

    def __init__(
        self,
        max_wait_s: float = MAX_WAIT_S,
        idle_s: float = IDLE_S,
        step_every_s: float = STEP_EVERY_S,
        slice_s: float = SLICE_S,
    ) -> None:
        self._max_wait_s = max_wait_s
        self._idle_s = idle_s
        self._step_every_s = min(step_every_s, max_wait_s)
        self.overruns = 0  # waits that gave up after max_wait_s
        lock = self._lock = threading.Lock()  # the conditions' lock; taken bare (C) on
        # serving's fast path, where Condition.__enter__ (Python) cost a microsecond
        self._cond = threading.Condition(lock)  # serving waits here
        self._step_cond = threading.Condition(lock)  # a step waits here
        self._holder: Literal["none", "serving", "step"] = "none"
        self._owner: int | None = None  # the thread holding the turn
        self._waiting = {"serving": 0, "step": 0}
        self._serving_done = -float("inf")  # monotonic s: serving last gave its turn up
        self._step_since: float | None = None  # monotonic s: the waiting step began
        self._slice_s = slice_s
        self._slice_end = -float("inf")  # monotonic s: a due step keeps its turn until

    def _step_due(self, now: float) -> bool:
        """A waiting step has waited ``step_every_s``: it goes before serving."""
        return self._step_since is not None and now - self._step_since >= self._step_every_s

    def _take(self, who: Literal["serving", "step"]) -> bool:
        """Wait for ``who``'s turn; False if it did not come within the bound (the
        caller goes on without it)."""
        with self._cond:
            t0 = now = time.monotonic()
            self._waiting[who] += 1
            if who == "step" and self._step_since is None:
                self._step_since = t0
            try:
                while True:
                    if self._holder == "none":
                        if who == "serving" and not self._step_due(now):
                            break
                        if who == "step" and (
                            self._step_due(now)
                            or (
                                not self._waiting["serving"]
                                and now - self._serving_done >= self._idle_s
                            )
                        ):
                            break
                    left = t0 + self._max_wait_s - now
                    if left <= 0:
                        break
                    if who == "step":
                        # Wake when due, else look for an idle gap every POLL_S: serving's
                        # give wakes a step only when it is due, as waking it after every
                        # batch cost serving a tenth of its time in interpreter handovers.
                        assert self._step_since is not None
                        wake = self._step_since + self._step_every_s - now
                        idle = self._serving_done + self._idle_s - now
                        wake = min(wake, max(idle, POLL_S))
                        self._step_cond.wait(min(left, max(wake, 1e-4)))
                        now = time.monotonic()
                        continue
                    if self._step_since is not None:  # the waiting step may become due
                        left = min(left, max(self._step_since + self._step_every_s - now, 1e-4))
                    self._cond.wait(left)
                    now = time.monotonic()
                ok = self._holder == "none"
            finally:
                self._waiting[who] -= 1
            if ok and who == "step":  # a due turn runs a slice, an idle one yields at once
                self._slice_end = now + self._slice_s if self._step_due(now) else now
            if who == "step" and not self._waiting["step"]:
                self._step_since = None
            if ok:
                self._holder, self._owner = who, threading.get_ident()
                return True
            self.overruns += 1
            holder = self._holder
        log.warning("%s waited %.0f s for its turn (held by %s): going on without it",
                    who, self._max_wait_s, holder)  # fmt: skip
        return False

    def _give(self) -> None:
        with self._lock:
            now = time.monotonic()
            if self._holder == "serving":
                self._serving_done = now
                if self._step_due(now):
                    self._step_cond.notify_all()
            else:
                self._cond.notify_all()
                self._step_cond.notify_all()  # another step thread, if any
            self._holder, self._owner = "none", None

    def _mine(self) -> bool:
        return self._owner == threading.get_ident()

    def serving(self) -> _ServingTurn:
        """The serving path's turn (reentrant; a step of this thread serves through).
        A context manager object rather than a generator: it is taken once per batch,
        and with no step waiting it costs one lock round trip each way."""
        return _ServingTurn(self)

    def _take_serving(self) -> bool:
        """Serving's turn: at once when nobody holds one and no step waits (the
        common case), else :meth:`_take`."""
        with self._lock:
            if self._holder == "none" and self._step_since is None:
                self._holder, self._owner = "serving", threading.get_ident()
                return True
        return self._take("serving")

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """A background step's turn. Nested in this thread's own step: a yield point;
        in this thread's serving turn (replay's one loop): passes through."""
        if self._mine():
            if self._holder == "step":
                self.pause()
            yield
            return
        taken = self._take("step")
        try:
            yield
        finally:
            if taken and self._mine():
                self._give()

    @contextlib.contextmanager
    def yielding(self) -> Iterator[None]:
        """Within a step: a region that holds no lock the serving path takes, where
        :func:`checkpoint` and :func:`fsync` give the turn up."""
        previous = getattr(_local, "turns", None)
        _local.turns = self
        try:
            yield
        finally:
            _local.turns = previous

    def pause(self) -> None:
        """Within a step: let serving go first if it waits (after the step's slice, if
        this turn came to it as due)."""
        if (
            self._mine()
            and self._holder == "step"
            and self._waiting["serving"]
            and time.monotonic() >= self._slice_end
        ):
            self.outside(lambda: None)

    def outside(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` with this thread's step given up meanwhile (a blocking wait),
        then the turn taken back; outside a step, just ``fn(*args)``."""
        if not (self._mine() and self._holder == "step"):
            return fn(*args)
        self._give()
        try:
            return fn(*args)
        finally:
            self._take("step")  # not taken within the bound: the step goes on without


def fsync(fd: int) -> None:
    """``os.fsync``, with the calling thread's step (if any) given up while the disk
    works: a step that writes durably never keeps serving waiting for the disk."""
    turns: Turns | None = getattr(_local, "turns", None)
    if turns is None:
        os.fsync(fd)
    else:
        turns.outside(os.fsync, fd)


def checkpoint() -> None:
    """A yield point: if the calling thread holds a step and serving waits, serving
    goes first (nothing otherwise)."""
    turns: Turns | None = getattr(_local, "turns", None)
    if turns is not None:
        turns.pause()


class _ServingTurn:
    """``with turns.serving():`` (see :meth:`Turns.serving`)."""

    __slots__ = ("_taken", "_turns")

    def __init__(self, turns: Turns) -> None:
        self._turns = turns
        self._taken = False

    def __enter__(self) -> None:
        t = self._turns
        self._taken = not t._mine() and t._take_serving()

    def __exit__(self, *exc: object) -> None:
        if self._taken:
            self._turns._give()
