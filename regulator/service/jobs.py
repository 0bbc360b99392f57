"""The recalibration state machine: one per device, the one place that knows whether a
recalibration is pending.

``idle`` → ``queued`` (handed to a worker) → ``running`` → ``idle``, or ``waiting`` when
a supervised recalibration found too few labels; a tick moves ``waiting`` back to
``queued`` once they have arrived. A request queued while another waits (a label-free
refresh) names it in ``then``: it waits again once that request is done. The state is
keyed by the trigger that asked for it, and holds the alert keys (fingerprints) of the
request being served, so a repeat of the same alert is a duplicate while it is pending,
and free again once it is not.

>>> q = RecalibrationState()
>>> q.enqueue(Request("alert", "supervised", "drift", key="fp1"))
True
>>> q.enqueue(Request("http", "supervised", "")), q.pending("fp1")
(False, True)
>>> q.start(); q.finish(waiting=False); q.phase, q.pending("fp1")
('idle', False)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from regulator.service.actions import Trigger

__all__ = ["Mode", "Outcome", "Phase", "RecalibrationResult", "RecalibrationState", "Request"]

Phase = Literal["idle", "waiting", "queued", "running"]
Mode = Literal["supervised", "label_free"]


@dataclass(frozen=True)
class Request:
    """One recalibration asked for: by whom, how, why, and its dedup ``key``."""

    trigger: Trigger
    mode: Mode
    reason: str
    key: str | None = None
    then: Request | None = None
    """The request that was waiting for labels when this one was queued."""


class RecalibrationState:
    """Thread-safe: requests come from HTTP threads, ticks from the main loop, the end
    of a job from a worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.phase: Phase = "idle"
        self.current: Request | None = None  # queued, running or waiting
        self._keys: set[str] = set()

    def claim(self, key: str | None) -> bool:
        """Reserve an alert key; False if a request with it is still pending."""
        if key is None:
            return True
        with self._lock:
            if key in self._keys:
                return False
            self._keys.add(key)
            return True

    def release(self, key: str | None) -> None:
        if key is not None:
            with self._lock:
                self._keys.discard(key)

    def enqueue(self, req: Request) -> bool:
        """``idle`` or ``waiting`` → ``queued``; False (nothing changes) while one is
        already queued or running."""
        with self._lock:
            if self.phase in ("queued", "running"):
                return False
            if req.key is not None:
                self._keys.add(req.key)
            self.phase, self.current = "queued", req
            return True

    def unqueue(self) -> None:
        """The worker would not take it (the scheduler's own 'already pending')."""
        with self._lock:
            self._finish_locked(waiting=False)

    def start(self) -> None:
        with self._lock:
            self.phase = "running"

    def finish(self, waiting: bool) -> None:
        """The job ended; ``waiting``: it found too few labels and waits for them."""
        with self._lock:
            self._finish_locked(waiting)

    def _finish_locked(self, waiting: bool) -> None:
        if self.current is not None and self.current.key is not None:
            self._keys.discard(self.current.key)
        if waiting and self.current is not None:
            self.phase = "waiting"
            self.current = Request(self.current.trigger, self.current.mode, self.current.reason)
        elif self.current is not None and self.current.then is not None:
            self.phase, self.current = "waiting", self.current.then
        else:
            self.phase, self.current = "idle", None

    def pending(self, key: str | None = None) -> bool:
        """With ``key``: that alert's request is pending. Without: one is queued or
        running."""
        with self._lock:
            if key is not None:
                return key in self._keys
            return self.phase in ("queued", "running")

    @property
    def waiting(self) -> Request | None:
        with self._lock:
            return self.current if self.phase == "waiting" else None

    @property
    def keys(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._keys)


Outcome = Literal["accepted", "rejected", "failed", "skipped"]


@dataclass
class RecalibrationResult:
    """Outcome of one recalibration job, as logged and reported."""

    trigger: str
    mode: str
    outcome: Outcome
    reason: str
    t_s: float
    seconds: float = 0.0
    version: str | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)
