"""The one action table: what ``recalibrate_supervised``, ``rollback``, ``low_power``…
do, whoever asks — a rule, a schedule, an Alertmanager alert or an HTTP request — and
which action a firing alert asks for under the policy's ``alerts`` section.

>>> calls = []
>>> table = ActionTable({"alert_only": lambda trigger, reason, key: calls.append(trigger) or {}})
>>> table.act("alert_only", "schedule")
{}
>>> calls
['schedule']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args

from regulator.errors import UnknownNameError
from regulator.policy.model import Action, AlertsConfig

__all__ = ["TRIGGERS", "ActionTable", "Handler", "Trigger", "alert_action"]

Trigger = Literal["rule", "schedule", "alert", "http", "labels", "refresh"]
"""Who asked for an action (the ``trigger`` label of ``regulator_recalibrations_total``):
``labels`` is the refinement that labels arriving after a swap start
(``recalibration.refine_error_above``), ``refresh`` the label-free re-normalisation that
unlabelled samples accruing in a drift episode start
(``recalibration.label_free_refresh_factor``)."""
TRIGGERS: tuple[Trigger, ...] = get_args(Trigger)

Handler = Callable[[Trigger, str, str | None], dict[str, Any]]
"""``handler(trigger, reason, key)``: ``key`` deduplicates (an alert's fingerprint)."""


class ActionTable:
    """Action name -> handler; every action of the policy's vocabulary has one."""

    def __init__(self, handlers: Mapping[Action, Handler]) -> None:
        self._handlers = dict(handlers)

    def act(
        self, action: Action, trigger: Trigger, reason: str = "", key: str | None = None
    ) -> dict[str, Any]:
        """Carry out ``action``; the handler's answer (``scheduled``, ``reason``, …)."""
        try:
            handler = self._handlers[action]
        except KeyError:
            raise UnknownNameError("action", action, self._handlers) from None
        return handler(trigger, reason, key)


def alert_action(cfg: AlertsConfig, labels: Mapping[str, str]) -> Action | None:
    """The action a firing alert asks for: its ``action_label`` naming an allowed action,
    or the deploy rules' ``recalibrate="true"`` (a supervised recalibration). None:
    ignore it."""
    if not cfg.enabled:
        return None
    named = labels.get(cfg.action_label, "").strip()
    if named:
        for allowed in cfg.allowed_actions:
            if named == allowed:
                return allowed
        return None
    wants = labels.get("recalibrate", "").strip().lower() == "true"
    if wants and "recalibrate_supervised" in cfg.allowed_actions:
        return "recalibrate_supervised"
    return None
