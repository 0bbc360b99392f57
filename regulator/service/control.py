"""The runtime's actions: its :class:`~regulator.service.actions.ActionTable`, the one
entry for every asker — a rule, a schedule, an Alertmanager alert or HTTP — with the
handlers that are not a recalibration's (roll back, low power, alert only), each
recorded in the event log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from regulator.errors import RegistryError
from regulator.policy.model import RECALIBRATION_ACTIONS, Action
from regulator.service.actions import ActionTable, Trigger, alert_action
from regulator.service.refresh import adapted_with_labels

if TYPE_CHECKING:
    from regulator.service.runtime import Runtime

__all__ = ["Controls"]


class Controls:
    """The action table of one runtime (``table``, shared with the cron schedules)."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        recal = rt.recal
        self.table = ActionTable(
            {
                "recalibrate_supervised": lambda t, r, k: recal.request(t, "supervised", r, k),
                "recalibrate_label_free": lambda t, r, k: recal.request(t, "label_free", r, k),
                "rollback": lambda t, r, k: self.rollback(t),
                "low_power": lambda t, r, k: self._low_power_action(),
                "alert_only": lambda t, r, k: self._alert_only(t, r),
            }
        )

    def act(
        self, action: Action, trigger: Trigger, reason: str = "", key: str | None = None
    ) -> dict[str, Any]:
        """Carry out an action (from a rule, a schedule, an alert or the API)."""
        return self.table.act(action, trigger, reason, key)

    def alert_action(self, labels: dict[str, str]) -> Action | None:
        """The action a firing Alertmanager alert asks for (policy ``alerts``)."""
        return alert_action(self._rt.policy.alerts, labels)

    def handle_alert(self, action: Action, key: str) -> dict[str, Any]:
        """Carry out an alert's action; recalibrations are deduplicated by ``key``."""
        out = self.table.act(action, "alert", f"alert {key}", key=key)
        if action in RECALIBRATION_ACTIONS:
            return out
        return {"scheduled": True, **out}

    def rollback(self, trigger: Trigger = "http") -> dict[str, Any]:
        """Serve the previous good version, in the current power mode."""
        rt = self._rt
        try:
            old, version = rt.slot.rollback(rt.clock())
        except RegistryError as err:
            rt.state.events.append("rollback", trigger=trigger, ok=False, reason=str(err))
            return {"ok": False, "reason": str(err)}
        rt.monitors.swapped()
        rt.recal.refresh.rolled_back(adapted_with_labels(rt.registry, version))
        rt.metrics.rollbacks.inc()
        rt.state.events.append("rollback", trigger=trigger, ok=True, old=old, new=version)
        return {"ok": True, "from": old, "to": version}

    def set_low_power(self, on: bool) -> None:
        """Fewer time steps per inference (policy's low_power_n_steps, default half)."""
        n = self._rt.slot.set_low_power(on)
        self._rt.state.events.append("low_power", on=on, n_steps=n)

    def _low_power_action(self) -> dict[str, Any]:
        self.set_low_power(True)
        return {"low_power": True}

    def _alert_only(self, trigger: Trigger, reason: str) -> dict[str, Any]:
        self._rt.state.events.append("alert", trigger=trigger, reason=reason)
        return {"alert_only": True}
