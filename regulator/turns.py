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

When both wait, turns alternate: neither side starves the other.

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
from collections.abc import Callable, Iterator
from typing import Literal, TypeVar

__all__ = ["MAX_WAIT_S", "Turns", "checkpoint", "fsync"]

T = TypeVar("T")

log = logging.getLogger(__name__)

MAX_WAIT_S = 5.0
"""The longest either side waits for its turn. Past it, the side goes on without the
turn (logged and counted in ``Turns.overruns``): turns shape latency, and must never be
able to hang the daemon, whatever a caller holds."""

_local = threading.local()  # .turns: the Turns whose step this thread holds, in a
# region declared free of the serving path's locks (Turns.yielding), else None


class Turns:
    """One process's serving path and its background steps, taking turns."""

    def __init__(self, max_wait_s: float = MAX_WAIT_S) -> None:
        self._max_wait_s = max_wait_s
        self.overruns = 0  # waits that gave up after max_wait_s
        self._cond = threading.Condition(threading.Lock())
        self._holder: Literal["none", "serving", "step"] = "none"
        self._owner: int | None = None  # the thread holding the turn
        self._waiting = {"serving": 0, "step": 0}
        self._last: Literal["serving", "step"] = "serving"

    def _take(self, who: Literal["serving", "step"]) -> bool:
        """Wait for ``who``'s turn; False if it did not come within the bound (the
        caller goes on without it)."""
        other: Literal["serving", "step"] = "step" if who == "serving" else "serving"
        with self._cond:
            self._waiting[who] += 1
            try:
                # free, and not this side's second turn in a row while the other waits
                ok = self._cond.wait_for(
                    lambda: (
                        self._holder == "none" and not (self._waiting[other] and self._last == who)
                    ),
                    timeout=self._max_wait_s,
                )
            finally:
                self._waiting[who] -= 1
            if not ok:
                self.overruns += 1
                holder = self._holder
            else:
                self._holder, self._owner = who, threading.get_ident()
                return True
        log.warning("%s waited %.0f s for its turn (held by %s): going on without it",
                    who, self._max_wait_s, holder)  # fmt: skip
        return False

    def _give(self) -> None:
        with self._cond:
            self._last = "step" if self._holder == "step" else "serving"
            self._holder, self._owner = "none", None
            self._cond.notify_all()

    def _mine(self) -> bool:
        return self._owner == threading.get_ident()

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """The serving path's turn (reentrant; a step of this thread serves through)."""
        if self._mine():
            yield
            return
        taken = self._take("serving")
        try:
            yield
        finally:
            if taken:
                self._give()

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
        """Within a step: let serving go first if it waits."""
        if self._mine() and self._holder == "step" and self._waiting["serving"]:
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
