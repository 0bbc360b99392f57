"""The one loop that drives a runtime, for ``regulator run`` and ``regulator replay``.

Each round serves a batch of samples (one chip forward), hands the labels that came due
to the label intake, and ticks the rules when ``tick_every_s`` of the runtime's clock has
passed. The daemon feeds it what its source delivered (wall clock); replay feeds it one
recorded sample at a time (simulated clock, one sample every ``1 / rate_hz``), so both
see the same order of serving, labels and decisions.

>>> class Rt:  # the part of a Runtime the loop uses
...     def __init__(self): self.t, self.ticks = 0.0, 0
...     def clock(self): return self.t
...     def process_batch(self, items, t=None, checked=False): return [{} for _ in items]
...     def add_labels(self, items, t=None): return {"accepted": len(list(items))}
...     def tick(self, t=None): self.ticks += 1
>>> rt = Rt(); loop = ServiceLoop(rt, feedback=None, tick_every_s=0.5)
>>> for i in range(4):
...     rt.t = i * 0.25
...     _ = loop.serve([SourceSample(str(i), None, None, rt.t)])
>>> rt.ticks  # at t = 0 and t = 0.5
2
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from typing import Any, Protocol

from regulator.errors import InputError, StorageFullError
from regulator.tasks.sources import FeedbackChannel, SourceSample

__all__ = ["TICK_EVERY_S", "ServiceLoop"]

log = logging.getLogger(__name__)

TICK_EVERY_S = 0.5
"""Seconds of the runtime's clock between rule evaluations."""


class _Runtime(Protocol):
    def clock(self) -> float: ...
    def process_batch(
        self, items: list[tuple[str, Any]], t: float | None = None, checked: bool = False
    ) -> list[dict[str, Any] | InputError]: ...
    def add_labels(self, items: Any, t: float | None = None) -> dict[str, Any]: ...
    def tick(self, t: float | None = None) -> Any: ...


class ServiceLoop:
    """Serve, deliver due labels, tick; see the module docstring."""

    def __init__(
        self,
        runtime: _Runtime,
        feedback: FeedbackChannel | None,
        tick_every_s: float = TICK_EVERY_S,
        checked: bool = False,
    ) -> None:
        self.rt = runtime
        self.feedback = feedback
        self.checked = checked  # the source's samples were checked at the edge already
        self.tick_every_s = tick_every_s
        self._last_tick = -math.inf

    def serve(
        self, samples: Sequence[SourceSample], t: float | None = None
    ) -> list[dict[str, Any] | InputError]:
        """One round: serve ``samples`` together, then labels, then maybe a tick."""
        fb = self.feedback
        seen = [fb.observe(s) for s in samples] if fb is not None else list(samples)
        items = [(s.sample_id, s.x) for s in seen]
        outs = self.rt.process_batch(items, t, self.checked) if seen else []
        self.deliver_labels(t)
        self.maybe_tick(t)
        return outs

    def deliver_labels(self, t: float | None = None) -> None:
        """Labels that came due from the feedback channel, to the intake. On a full
        disk the guard counts and logs the refusal; serving goes on."""
        if self.feedback is None:
            return
        ready = self.feedback.pop_ready()
        if ready:
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
