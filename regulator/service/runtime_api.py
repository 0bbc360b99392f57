"""What the HTTP API needs from the daemon's runtime: the :class:`RuntimeAPI` protocol
(the daemon's :class:`~regulator.service.wiring.DaemonAPI`, or a fake in tests)."""

from __future__ import annotations

from typing import Any, Protocol

from regulator.policy.model import Action
from regulator.service.actions import Trigger
from regulator.service.bodies import FeedbackItem, Sample

__all__ = ["RuntimeAPI"]


class RuntimeAPI(Protocol):
    """What the HTTP API needs from the daemon's runtime. Methods are called from worker
    threads, concurrently with the main loop: they must be thread-safe and quick
    (schedule work, do not do it), except that ``push_samples`` waits for its samples to
    be served, and on the samples' clock ``feedback`` for a recalibration it started
    (``source.clock: sample``: replay's order, where a recalibration takes no time).
    Raising ``InputError`` gives 422, any other ``RegulatorError`` (``RegistryError``,
    ``ConfigError``...) gives 409 with the message.
    """

    def healthy(self) -> bool:
        """The main loop ticked recently (on the samples' clock: ran a round recently)."""
        ...

    def ready(self) -> bool:
        """Model loaded, policy valid, scheduler running."""
        ...

    def status(self) -> dict[str, Any]:
        """JSON-ready: model version, monitors, last recalibrations, pending jobs."""
        ...

    def models(self) -> list[dict[str, Any]]:
        """Registry versions with lineage (``VersionInfo.as_dict()``)."""
        ...

    def request_recalibration(self, trigger: Trigger, key: str | None = None) -> dict[str, Any]:
        """Schedule a recalibration now; idempotent while one is pending. Returns e.g.
        ``{"scheduled": bool, "pending": bool, "job": id}``."""
        ...

    def alert_action(self, labels: dict[str, str]) -> Action | None:
        """The action a firing alert with these labels asks for (policy's ``alerts``
        section), or None to ignore it."""
        ...

    def handle_alert(self, action: Action, key: str) -> dict[str, Any]:
        """Carry out ``action`` for the alert ``key`` (a recalibration is deduplicated
        by ``key`` while pending)."""
        ...

    def recalibration_pending(self, key: str | None = None) -> bool:
        """True while a recalibration (requested with ``key``, or any when None) is
        queued or running; the API uses it to drop duplicate alerts."""
        ...

    def rollback(self) -> dict[str, Any]:
        """Serve the previous good version; RegistryError (409) if there is none."""
        ...

    def feedback(self, items: list[FeedbackItem]) -> dict[str, Any]:
        """Persist labels (before returning): ``{"accepted": n, "rejected": [{"index",
        "reason", "detail"}]}``; StorageFullError (507) when nothing could be stored. On
        the samples' clock they are taken at their latest ``t``."""
        ...

    def push_samples(self, items: list[Sample], wait: bool = True) -> dict[str, Any]:
        """Enqueue validated samples; with ``wait``, return once they are served (at
        most ``REPLY_WAIT_S``). The fields of :class:`SamplesResponse` (``rejected``
        indices are into ``items``). ConfigError when the source is not ``http``."""
        ...

    def record_events(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Append ``(kind, fields)`` events to the event log in one write (the API
        records every alert it handles)."""
        ...
