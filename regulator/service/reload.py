"""What a SIGHUP may change while the daemon runs, section by section.

A reloaded policy is applied whole or refused whole (the old one kept, the refusal
counted in ``regulator_policy_reload_failures_total``). It is refused when it changes a
field that only a restart can change: the chip (``device``), the prior it was started
from, the data source, the HTTP listener and its body limits, the log format, the
state directory and the stores opened in it. Everything else — rules, schedules,
monitor windows and detector, recalibration settings and budgets, alerts, the token's
source, the log level, registry retention, ``model.n_steps`` — takes effect at once.

>>> from regulator.policy.model import Policy
>>> old = Policy()
>>> restart_only_changes(old, old.model_copy(update={"state_dir": "elsewhere"}))
['state_dir']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from regulator.policy.model import Policy

__all__ = ["RESTART_ONLY", "ReloadOutcome", "restart_only_changes"]

RESTART_ONLY: tuple[str, ...] = (
    "device",
    "model.prior",
    "source",
    "http.host",
    "http.port",
    "http.max_body_bytes",
    "http.max_json_depth",
    "http.metrics_max_age_s",
    "http.docs",
    "logging.format",
    "storage.reserve_bytes",
    "storage.event_log_max_bytes",
    "storage.event_log_files",
    "storage.max_labels",
    "state_dir",
)
"""Dotted fields of the policy that need a restart to change."""


@dataclass(frozen=True)
class ReloadOutcome:
    """A policy reload: ``applied``, or refused with the ``reason``."""

    applied: bool
    reason: str = ""


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj.model_dump() if isinstance(obj, BaseModel) else obj


def restart_only_changes(old: Policy, new: Policy) -> list[str]:
    """The fields of :data:`RESTART_ONLY` that differ between ``old`` and ``new``."""
    return [f for f in RESTART_ONLY if _get(old, f) != _get(new, f)]
