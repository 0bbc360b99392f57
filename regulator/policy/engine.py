"""The rule engine: from one tick's monitor signals to the actions the policy asks for.

Pure logic: no threads, no clock. Time always comes in with the signals (``t_s``,
seconds on any clock that does not go backwards: monotonic in the daemon, simulated in a
replay), so a replay of an hour of data takes milliseconds and behaves like the hour.

For each rule, in policy order:

1. its condition is checked on the signals; a duration (``for_s``) means the condition
   must have held at every tick since a tick at least that long ago (a missing signal,
   such as no OOD p-value yet, counts as not holding);
2. a rule that fired less than ``cooldown_s`` ago stays quiet;
3. a recalibration action is suppressed when ``recalibration.max_per_hour``
   recalibrations already ran in the last hour, or when today's learning energy has
   reached ``recalibration.learning_energy_budget_j_per_day``. A suppressed decision is
   returned with ``suppressed=True`` and the reason (so it can be logged and counted),
   starts no cooldown, and repeats at most every ``max(cooldown_s, 60)`` seconds;
4. otherwise the rule fires: a Decision, and its cooldown starts.

Rules that fire at the same tick each return a Decision; this pre-check sees the hourly
count as it stood before the tick. The limit itself is enforced when a recalibration
starts real work (``regulator.service.recalibration``: checked and counted in one step,
persisted), so two decisions at one tick cannot both pass it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from regulator.policy.model import (
    RECALIBRATION_ACTIONS,
    AccuracyBelow,
    Action,
    DriftDetected,
    LayerSaturated,
    LayerSilent,
    OodPvalueBelow,
    Policy,
    PowerAbove,
    Rule,
)

__all__ = ["Decision", "RuleEngine", "Signals"]

_HOUR_S = 3600.0
_SUPPRESSED_REPEAT_MIN_S = 60.0
_STATE_VERSION = 1


@dataclass(frozen=True)
class Signals:
    """What the monitors say at one tick.

    ``accuracy`` is the windowed accuracy over the last ``n_labels`` labels (at most
    ``monitors.accuracy_window_labels``); None before any label. ``power_w`` is None
    before the first power window is full. ``learning_energy_j_today`` is the learning
    energy (joules) spent since the start of the current UTC day;
    ``recalibrations_last_hour`` counts recalibrations of every trigger (rules,
    schedules, alerts, HTTP) that started in the last 3600 s.
    """

    t_s: float
    drift_detected: bool = False
    ood_pvalue: float | None = None
    accuracy: float | None = None
    n_labels: int = 0
    power_w: float | None = None
    silent_layers: tuple[str, ...] = ()
    saturated_layers: tuple[str, ...] = ()
    learning_energy_j_today: float = 0.0
    recalibrations_last_hour: int = 0


@dataclass(frozen=True)
class Decision:
    """A rule's verdict at time ``t_s``: do ``action`` (or, if ``suppressed``, it would
    have, and ``reason`` says why it did not)."""

    rule: str
    action: Action
    reason: str
    t_s: float
    suppressed: bool = False

    @property
    def is_recalibration(self) -> bool:
        return self.action in RECALIBRATION_ACTIONS


@dataclass
class _RuleState:
    since_t_s: float | None = None
    last_fired_t_s: float | None = None
    last_suppressed_t_s: float | None = None

    def to_json(self) -> dict[str, float | None]:
        return {
            "since_t_s": self.since_t_s,
            "last_fired_t_s": self.last_fired_t_s,
            "last_suppressed_t_s": self.last_suppressed_t_s,
        }


@dataclass
class _State:
    t_s: float | None = None
    rules: dict[str, _RuleState] = field(default_factory=dict)
    recalibrations_t_s: list[float] = field(default_factory=list)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _check(rule: Rule, s: Signals) -> str | None:
    """A description of the condition when it holds at this tick, else None."""
    cond = rule.condition
    if isinstance(cond, DriftDetected):
        return "drift detected" if s.drift_detected else None
    if isinstance(cond, OodPvalueBelow):
        if s.ood_pvalue is not None and s.ood_pvalue < cond.threshold:
            return f"OOD p-value {_fmt(s.ood_pvalue)} < {_fmt(cond.threshold)}"
        return None
    if isinstance(cond, AccuracyBelow):
        if (
            s.accuracy is not None
            and s.n_labels >= cond.last_n_labels
            and s.accuracy < cond.threshold
        ):
            return (
                f"accuracy {_fmt(s.accuracy)} < {_fmt(cond.threshold)} "
                f"over the last {s.n_labels} labels"
            )
        return None
    if isinstance(cond, PowerAbove):
        if s.power_w is not None and s.power_w > cond.watts:
            return f"power {_fmt(s.power_w)} W > {_fmt(cond.watts)} W"
        return None
    if isinstance(cond, LayerSilent | LayerSaturated):
        observed = s.silent_layers if isinstance(cond, LayerSilent) else s.saturated_layers
        layers = [name for name in observed if not cond.layers or name in cond.layers]
        if layers:
            what = "silent" if isinstance(cond, LayerSilent) else "saturated"
            return f"layer {', '.join(layers)} {what}"
        return None
    raise AssertionError(f"unhandled condition {cond!r}")  # the union is closed


class RuleEngine:
    """Evaluates a policy's rules, tick by tick, on explicit times.

    >>> from regulator.policy.model import parse_policy
    >>> policy = parse_policy({"rules": [{
    ...     "name": "hot", "action": "low_power", "cooldown_s": 120,
    ...     "condition": {"signal": "power_above", "watts": 0.5, "for_s": 60}}]})
    >>> engine = RuleEngine(policy)
    >>> engine.evaluate(Signals(t_s=0.0, power_w=0.8))
    []
    >>> engine.evaluate(Signals(t_s=60.0, power_w=0.9))  # doctest: +NORMALIZE_WHITESPACE
    [Decision(rule='hot', action='low_power',
              reason='power 0.9 W > 0.5 W for 60 s (for_s 60)', t_s=60.0, suppressed=False)]
    >>> engine.evaluate(Signals(t_s=90.0, power_w=0.9))  # cooling down
    []
    """

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._rules: tuple[Rule, ...] = policy.rules
        self._state = _State(rules={rule.name: _RuleState() for rule in policy.rules})

    @property
    def policy(self) -> Policy:
        return self._policy

    # --- evaluation ---------------------------------------------------------------

    def evaluate(self, signals: Signals) -> list[Decision]:
        """The decisions at this tick (fired and suppressed), in rule order.

        Raises ValueError if ``signals.t_s`` is not finite or is earlier than the
        previous tick's."""
        t = signals.t_s
        if not math.isfinite(t):
            raise ValueError(f"t_s must be finite, got {t!r}")
        if self._state.t_s is not None and t < self._state.t_s:
            raise ValueError(
                f"t_s went backwards: {t} after {self._state.t_s}; pass monotonic or "
                "simulated time that never decreases"
            )
        self._state.t_s = t
        self._forget_old_recalibrations(t)

        decisions: list[Decision] = []
        recalibration_fired = False
        for rule in self._rules:
            st = self._state.rules[rule.name]
            holds = _check(rule, signals)
            if holds is None:
                st.since_t_s = None
                continue
            if st.since_t_s is None:
                st.since_t_s = t
            held_s = t - st.since_t_s
            for_s = rule.condition.for_s
            if held_s < for_s:
                continue
            if st.last_fired_t_s is not None and t - st.last_fired_t_s < rule.cooldown_s:
                continue
            reason = holds
            if for_s > 0:
                reason += f" for {_fmt(held_s)} s (for_s {_fmt(for_s)})"

            if rule.action in RECALIBRATION_ACTIONS and not recalibration_fired:
                blocked = self.recalibration_blocked(signals)
                if blocked is not None:
                    repeat_s = max(rule.cooldown_s, _SUPPRESSED_REPEAT_MIN_S)
                    last = st.last_suppressed_t_s
                    if last is None or t - last >= repeat_s:
                        st.last_suppressed_t_s = t
                        decisions.append(
                            Decision(
                                rule.name,
                                rule.action,
                                f"{reason}; suppressed: {blocked}",
                                t,
                                suppressed=True,
                            )
                        )
                    continue
            st.last_fired_t_s = t
            st.last_suppressed_t_s = None
            if rule.action in RECALIBRATION_ACTIONS and not recalibration_fired:
                recalibration_fired = True
                self._state.recalibrations_t_s.append(t)
            decisions.append(Decision(rule.name, rule.action, reason, t))
        return decisions

    def recalibration_blocked(self, signals: Signals) -> str | None:
        """Why a recalibration may not start now (hourly limit, daily energy budget),
        or None if it may. The service asks this for schedules, alerts and HTTP too."""
        cfg = self._policy.recalibration
        recent = max(
            signals.recalibrations_last_hour,
            sum(1 for x in self._state.recalibrations_t_s if signals.t_s - x < _HOUR_S),
        )
        if recent >= cfg.max_per_hour:
            return f"{recent} recalibrations in the last hour (max_per_hour {cfg.max_per_hour})"
        budget = cfg.learning_energy_budget_j_per_day
        if budget is not None and signals.learning_energy_j_today >= budget:
            return (
                f"learning energy today {_fmt(signals.learning_energy_j_today)} J "
                f">= budget {_fmt(budget)} J per day"
            )
        return None

    def refund_recalibration(self) -> None:
        """The latest recalibration a rule fired did no work (it only waited for labels,
        or one was already pending): it no longer counts towards ``max_per_hour``."""
        if self._state.recalibrations_t_s:
            self._state.recalibrations_t_s.pop()

    def _forget_old_recalibrations(self, t: float) -> None:
        self._state.recalibrations_t_s = [
            x for x in self._state.recalibrations_t_s if t - x < _HOUR_S
        ]

    # --- state ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The engine's state as JSON-able data (times on the caller's clock)."""
        return {
            "version": _STATE_VERSION,
            "t_s": self._state.t_s,
            "rules": {name: st.to_json() for name, st in self._state.rules.items()},
            "recalibrations_t_s": list(self._state.recalibrations_t_s),
        }

    def load_state_dict(self, state: Mapping[str, Any], t_s: float | None = None) -> None:
        """Restore a ``state_dict()``. Rules not in this policy are ignored; rules not
        in the state start fresh.

        With ``t_s`` None the times are taken as they are (same clock: a policy reload,
        a replay). With ``t_s`` (the current time on a new clock, such as after a
        restart, when the monotonic clock started over) the saved times are shifted so
        that the saved last tick is now: cooldowns and the hourly count resume where they
        stopped, and durations start over, since nobody watched the conditions in
        between. Raises ValueError for state it cannot read."""
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise ValueError(f"not a rule engine state of version {_STATE_VERSION}")
        saved_t = _opt_float(state.get("t_s"))
        shift = 0.0 if t_s is None or saved_t is None else t_s - saved_t
        rebase = t_s is not None

        def moved(x: Any) -> float | None:
            value = _opt_float(x)
            return None if value is None else value + shift

        rules_state = state.get("rules", {})
        if not isinstance(rules_state, Mapping):
            raise ValueError("rule engine state: 'rules' must be a mapping")
        new = _State(t_s=t_s if rebase else saved_t)
        for rule in self._rules:
            saved = rules_state.get(rule.name)
            if not isinstance(saved, Mapping):
                new.rules[rule.name] = _RuleState()
                continue
            new.rules[rule.name] = _RuleState(
                since_t_s=None if rebase else moved(saved.get("since_t_s")),
                last_fired_t_s=moved(saved.get("last_fired_t_s")),
                last_suppressed_t_s=moved(saved.get("last_suppressed_t_s")),
            )
        recal = state.get("recalibrations_t_s", [])
        if not isinstance(recal, Sequence):
            raise ValueError("rule engine state: 'recalibrations_t_s' must be a list")
        new.recalibrations_t_s = [x + shift for x in map(float, recal)]
        self._state = new

    def rebuilt(self, policy: Policy) -> RuleEngine:
        """A new engine for a reloaded policy. Rules of the same name keep their
        cooldown; those whose condition is also unchanged keep their duration too; the
        recent recalibrations carry over. This engine is left as it was."""
        engine = RuleEngine(policy)
        old_rules = {rule.name: rule for rule in self._rules}
        engine._state.t_s = self._state.t_s
        engine._state.recalibrations_t_s = list(self._state.recalibrations_t_s)
        for rule in engine._rules:
            old_rule = old_rules.get(rule.name)
            if old_rule is None:
                continue
            old = self._state.rules[rule.name]
            engine._state.rules[rule.name] = _RuleState(
                since_t_s=old.since_t_s if old_rule.condition == rule.condition else None,
                last_fired_t_s=old.last_fired_t_s,
                last_suppressed_t_s=old.last_suppressed_t_s,
            )
        return engine


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"rule engine state: expected a number or null, got {value!r}")
    return float(value)
