"""Replies to ``POST /v1/samples``: each pushed sample's result, handed from the main
loop that serves it to the HTTP thread that waits for it.

The HTTP thread registers a :class:`Reply` before it queues the sample (so the main
loop cannot serve it first), the main loop delivers each served sample's result by id
after its round (serve, labels, tick), and the HTTP thread waits with a deadline and
makes the result's row itself (:class:`~regulator.service.rows.ServedRows`). A
sample id pushed twice gets its replies in the order it was pushed.

>>> replies = Replies()
>>> r = replies.expect("s1")
>>> replies.deliver(["s0", "s1"], [{"prediction": 0}, {"prediction": 3}])
>>> r.wait(0.0), r.result
(True, {'prediction': 3})
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Sequence

from regulator.service.rows import Result

__all__ = ["Replies", "Reply"]


class Reply:
    """One sample's result, once served (a result dict or the InputError that refused it)."""

    __slots__ = ("_at", "_event", "_results")

    def __init__(self) -> None:
        self._results: Sequence[Result] | None = None
        self._at = 0
        self._event = threading.Event()

    def set(self, results: Sequence[Result], at: int) -> None:
        """Served: the result is ``results[at]`` (read, and a row made, by the waiter)."""
        self._results, self._at = results, at
        self._event.set()

    @property
    def result(self) -> Result | None:
        """The result once served, else None."""
        return None if self._results is None else self._results[self._at]

    def wait(self, timeout_s: float) -> bool:
        """True once served; False if ``timeout_s`` passed first."""
        return self._event.wait(max(0.0, timeout_s))


class Replies:
    """Thread-safe: ``expect`` and ``cancel`` from HTTP threads, ``deliver`` from the main loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, deque[Reply]] = {}

    def expect(self, sample_id: str) -> Reply:
        """A reply for the next sample served with ``sample_id``."""
        reply = Reply()
        with self._lock:
            self._by_id.setdefault(sample_id, deque()).append(reply)
        return reply

    def cancel(self, sample_id: str, reply: Reply) -> None:
        """Nobody waits any more (the push was refused, or the wait timed out)."""
        with self._lock:
            q = self._by_id.get(sample_id)
            if q is None:
                return
            with contextlib.suppress(ValueError):
                q.remove(reply)
            if not q:
                del self._by_id[sample_id]

    def deliver(self, ids: Sequence[str], results: Sequence[Result]) -> None:
        """The results of a round, in the order served."""
        if not self._by_id:  # nobody waits: the common case of a pushing source
            return
        with self._lock:
            if len(ids) != len(results):
                raise ValueError(f"{len(ids)} ids for {len(results)} results")
            for at, sid in enumerate(ids):
                q = self._by_id.get(sid)
                if q is None:
                    continue
                reply = q.popleft()
                if not q:
                    del self._by_id[sid]
                reply.set(results, at)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._by_id.values())
