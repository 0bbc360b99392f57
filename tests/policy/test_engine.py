"""The rule engine, driven by synthetic signals on explicit times."""

from __future__ import annotations

import json
from typing import Any

import pytest

from regulator.policy.engine import Decision, RuleEngine, Signals
from regulator.policy.model import Policy, parse_policy


def policy(*rules: dict[str, Any], **sections: Any) -> Policy:
    return parse_policy({"rules": list(rules), **sections})


def rule(
    name: str, condition: dict[str, Any], action: str, cooldown_s: float = 0
) -> dict[str, Any]:
    return {"name": name, "condition": condition, "action": action, "cooldown_s": cooldown_s}


OOD = rule("ood", {"signal": "ood_pvalue_below", "threshold": 0.01, "for_s": 30}, "alert_only", 100)
DRIFT = rule("drift", {"signal": "drift_detected"}, "recalibrate_supervised", 300)


def fired(decisions: list[Decision]) -> list[str]:
    return [d.rule for d in decisions if not d.suppressed]


def test_embedded_default_rules() -> None:
    engine = RuleEngine(Policy())
    assert engine.evaluate(Signals(t_s=0.0)) == []
    (d,) = engine.evaluate(Signals(t_s=1.0, drift_detected=True))
    assert (d.rule, d.action, d.suppressed, d.t_s) == (
        "drift",
        "recalibrate_supervised",
        False,
        1.0,
    )
    assert d.reason == "drift detected"
    assert d.is_recalibration


def test_duration_must_hold_continuously() -> None:
    engine = RuleEngine(policy(OOD))
    assert engine.evaluate(Signals(t_s=0.0, ood_pvalue=0.001)) == []
    assert engine.evaluate(Signals(t_s=29.9, ood_pvalue=0.001)) == []
    # the condition breaks for one tick: the clock starts over
    assert engine.evaluate(Signals(t_s=30.0, ood_pvalue=0.5)) == []
    assert engine.evaluate(Signals(t_s=31.0, ood_pvalue=0.001)) == []
    assert engine.evaluate(Signals(t_s=60.9, ood_pvalue=0.001)) == []
    (d,) = engine.evaluate(Signals(t_s=61.0, ood_pvalue=0.001))
    assert d.rule == "ood" and d.action == "alert_only"
    assert d.reason == "OOD p-value 0.001 < 0.01 for 30 s (for_s 30)"


def test_missing_signal_does_not_hold() -> None:
    engine = RuleEngine(policy(OOD))
    engine.evaluate(Signals(t_s=0.0, ood_pvalue=0.001))
    engine.evaluate(Signals(t_s=10.0, ood_pvalue=None))  # no score this tick: resets
    assert engine.evaluate(Signals(t_s=35.0, ood_pvalue=0.001)) == []


def test_cooldown_per_rule() -> None:
    engine = RuleEngine(
        policy(
            OOD, rule("hot", {"signal": "power_above", "watts": 1.0, "for_s": 0}, "low_power", 10)
        )
    )
    hot = {"ood_pvalue": 0.0, "power_w": 2.0}
    assert fired(engine.evaluate(Signals(t_s=0.0, **hot))) == ["hot"]
    assert fired(engine.evaluate(Signals(t_s=5.0, **hot))) == []
    assert fired(engine.evaluate(Signals(t_s=10.0, **hot))) == ["hot"]
    assert fired(engine.evaluate(Signals(t_s=30.0, **hot))) == ["ood", "hot"]
    assert fired(engine.evaluate(Signals(t_s=40.0, **hot))) == ["hot"]
    # the OOD rule stays quiet for its 100 s cooldown, then fires again if still true
    assert fired(engine.evaluate(Signals(t_s=129.9, **hot))) == ["hot"]
    assert fired(engine.evaluate(Signals(t_s=130.0, **hot))) == ["ood"]  # hot: 0.1 s ago


def test_accuracy_needs_enough_labels() -> None:
    engine = RuleEngine(Policy())
    assert engine.evaluate(Signals(t_s=0.0, accuracy=0.2, n_labels=49)) == []
    (d,) = engine.evaluate(Signals(t_s=1.0, accuracy=0.6, n_labels=50))
    assert d.rule == "low-accuracy"
    assert d.reason == "accuracy 0.6 < 0.7 over the last 50 labels"
    engine = RuleEngine(Policy())
    assert engine.evaluate(Signals(t_s=0.0, accuracy=0.7, n_labels=100)) == []


def test_layer_conditions() -> None:
    engine = RuleEngine(
        policy(
            rule("silent", {"signal": "layer_silent", "for_s": 5}, "alert_only", 60),
            rule("sat", {"signal": "layer_saturated", "layers": ["out"], "for_s": 0}, "low_power"),
        )
    )
    assert engine.evaluate(Signals(t_s=0.0, silent_layers=("h1",), saturated_layers=("h1",))) == []
    assert engine.evaluate(Signals(t_s=4.0, silent_layers=("h2",))) == []
    silent, sat = engine.evaluate(
        Signals(t_s=5.0, silent_layers=("h1", "h2"), saturated_layers=("out",))
    )
    # h1 was silent at 0 s, h2 at 4 s: "some layer silent" has held for 5 s
    assert silent.rule == "silent" and silent.reason == "layer h1, h2 silent for 5 s (for_s 5)"
    assert sat.rule == "sat" and sat.reason == "layer out saturated"


def test_max_recalibrations_per_hour() -> None:
    engine = RuleEngine(
        policy(
            rule("drift", {"signal": "drift_detected"}, "recalibrate_supervised", 60),
            recalibration={"max_per_hour": 2},
        )
    )
    times_fired = []
    suppressed = []
    for minute in range(0, 121):
        for d in engine.evaluate(Signals(t_s=minute * 60.0, drift_detected=True)):
            (suppressed if d.suppressed else times_fired).append(d.t_s)
    # two in each rolling hour: the third waits until the first is an hour old
    assert times_fired == [0.0, 60.0, 3600.0, 3660.0, 7200.0]
    # suppressed decisions are reported, at most once a minute (cooldown 60 s)
    assert suppressed[0] == 120.0
    assert suppressed == [t * 60.0 for t in range(2, 60)] + [t * 60.0 for t in range(62, 120)]


def test_external_recalibration_count_is_respected() -> None:
    engine = RuleEngine(Policy())
    (d,) = engine.evaluate(Signals(t_s=0.0, drift_detected=True, recalibrations_last_hour=4))
    assert d.suppressed and d.action == "recalibrate_supervised"
    assert d.reason == (
        "drift detected; suppressed: 4 recalibrations in the last hour (max_per_hour 4)"
    )
    # a suppressed decision starts no cooldown: the rule fires as soon as it may
    (d,) = engine.evaluate(Signals(t_s=1.0, drift_detected=True, recalibrations_last_hour=3))
    assert not d.suppressed


def test_suppressed_decisions_are_not_repeated_every_tick() -> None:
    engine = RuleEngine(Policy())
    out = []
    for t in range(0, 400, 1):
        out += engine.evaluate(
            Signals(t_s=float(t), drift_detected=True, recalibrations_last_hour=4)
        )
    # drift rule (cooldown 300 s): at 0 and 300
    assert [d.t_s for d in out] == [0.0, 300.0]
    assert all(d.suppressed for d in out)


def test_learning_energy_budget() -> None:
    engine = RuleEngine(
        policy(
            DRIFT,
            rule("hot", {"signal": "power_above", "watts": 1, "for_s": 0}, "low_power"),
            recalibration={"learning_energy_budget_j_per_day": 2.0},
        )
    )
    decisions = engine.evaluate(
        Signals(t_s=0.0, drift_detected=True, power_w=5.0, learning_energy_j_today=2.0)
    )
    assert [(d.rule, d.suppressed) for d in decisions] == [("drift", True), ("hot", False)]
    assert "learning energy today 2 J >= budget 2 J per day" in decisions[0].reason
    (d,) = engine.evaluate(Signals(t_s=1.0, drift_detected=True, learning_energy_j_today=0.0))
    assert d.rule == "drift" and not d.suppressed


def test_no_budget_means_unlimited_energy() -> None:
    engine = RuleEngine(Policy())
    (d,) = engine.evaluate(Signals(t_s=0.0, drift_detected=True, learning_energy_j_today=1e9))
    assert not d.suppressed


def test_simultaneous_recalibrations_count_once() -> None:
    engine = RuleEngine(Policy().with_overrides({"recalibration.max_per_hour": 1}))
    decisions = engine.evaluate(Signals(t_s=0.0, drift_detected=True, accuracy=0.1, n_labels=60))
    assert [(d.rule, d.suppressed) for d in decisions] == [
        ("drift", False),
        ("low-accuracy", False),
    ]
    assert engine.recalibration_blocked(Signals(t_s=1.0)) is not None
    assert engine.recalibration_blocked(Signals(t_s=3600.0)) is None


def test_time_must_not_go_backwards() -> None:
    engine = RuleEngine(Policy())
    engine.evaluate(Signals(t_s=10.0))
    engine.evaluate(Signals(t_s=10.0))
    with pytest.raises(ValueError, match="backwards"):
        engine.evaluate(Signals(t_s=9.0))
    with pytest.raises(ValueError, match="finite"):
        engine.evaluate(Signals(t_s=float("nan")))


def test_state_round_trip_same_clock() -> None:
    p = policy(OOD, DRIFT)
    a = RuleEngine(p)
    a.evaluate(Signals(t_s=0.0, drift_detected=True, ood_pvalue=0.001))
    a.evaluate(Signals(t_s=20.0, ood_pvalue=0.001))
    state = json.loads(json.dumps(a.state_dict()))
    b = RuleEngine(p)
    b.load_state_dict(state)
    assert b.state_dict() == a.state_dict()
    # both continue identically: OOD fires at 30 s, drift is still cooling down
    for engine in (a, b):
        assert fired(engine.evaluate(Signals(t_s=30.0, drift_detected=True, ood_pvalue=0.001))) == [
            "ood"
        ]
        assert fired(engine.evaluate(Signals(t_s=300.0, drift_detected=True))) == ["drift"]


def test_state_rebased_to_new_clock() -> None:
    p = policy(OOD, DRIFT)
    a = RuleEngine(p)
    a.evaluate(Signals(t_s=1000.0, drift_detected=True))
    a.evaluate(Signals(t_s=1080.0, ood_pvalue=0.001))
    a.evaluate(Signals(t_s=1100.0, ood_pvalue=0.001))  # OOD has held 20 s of 30
    saved = json.loads(json.dumps(a.state_dict()))
    b = RuleEngine(p)
    b.load_state_dict(saved, t_s=5.0)  # after a restart the clock reads 5 s
    # drift fired 100 s before the save: 200 s of cooldown remain
    assert fired(b.evaluate(Signals(t_s=204.0, drift_detected=True))) == []
    assert fired(b.evaluate(Signals(t_s=205.0, drift_detected=True))) == ["drift"]
    # the hourly count carried over too, on the new clock
    assert b.state_dict()["recalibrations_t_s"] == [-95.0, 205.0]
    # the OOD duration was not carried over the gap: it must hold 30 s again
    b2 = RuleEngine(p)
    b2.load_state_dict(saved, t_s=5.0)
    assert fired(b2.evaluate(Signals(t_s=5.0, ood_pvalue=0.001))) == []
    assert fired(b2.evaluate(Signals(t_s=15.0, ood_pvalue=0.001))) == []
    assert fired(b2.evaluate(Signals(t_s=35.0, ood_pvalue=0.001))) == ["ood"]


def test_load_state_ignores_unknown_rules_and_refuses_garbage() -> None:
    engine = RuleEngine(Policy())
    engine.load_state_dict(
        {
            "version": 1,
            "t_s": 3.0,
            "rules": {"gone": {"last_fired_t_s": 1.0}},
            "recalibrations_t_s": [],
        }
    )
    assert set(engine.state_dict()["rules"]) == {"drift", "low-accuracy"}
    with pytest.raises(ValueError):
        engine.load_state_dict({"version": 99})
    with pytest.raises(ValueError):
        engine.load_state_dict(
            {"version": 1, "t_s": 0, "rules": {"drift": {"last_fired_t_s": "yesterday"}}}
        )


def test_rebuild_on_reload_keeps_cooldowns_by_name() -> None:
    old = RuleEngine(policy(OOD, DRIFT))
    old.evaluate(Signals(t_s=0.0, drift_detected=True, ood_pvalue=0.001))
    old.evaluate(Signals(t_s=20.0, ood_pvalue=0.001))
    # reload: drift kept (new action), ood's condition changed, a new rule added
    new_policy = policy(
        rule("ood", {"signal": "ood_pvalue_below", "threshold": 0.05, "for_s": 30}, "alert_only"),
        rule("drift", {"signal": "drift_detected"}, "recalibrate_label_free", 300),
        rule("new", {"signal": "drift_detected"}, "alert_only", 1000),
    )
    new = old.rebuilt(new_policy)
    assert new.policy is new_policy
    # drift is still cooling down; the new rule fires at once; ood's duration restarted
    assert fired(new.evaluate(Signals(t_s=30.0, drift_detected=True, ood_pvalue=0.001))) == ["new"]
    assert fired(new.evaluate(Signals(t_s=60.0, ood_pvalue=0.001))) == ["ood"]
    (d,) = new.evaluate(Signals(t_s=300.0, drift_detected=True))
    assert (d.rule, d.action) == ("drift", "recalibrate_label_free")
    # the old engine is untouched
    assert old.state_dict()["t_s"] == 20.0


def test_rebuild_keeps_duration_when_condition_unchanged() -> None:
    old = RuleEngine(policy(OOD))
    old.evaluate(Signals(t_s=0.0, ood_pvalue=0.001))
    new = old.rebuilt(policy({**OOD, "action": "rollback"}))
    (d,) = new.evaluate(Signals(t_s=30.0, ood_pvalue=0.001))
    assert (d.rule, d.action) == ("ood", "rollback")


def test_replay_time_is_simulated() -> None:
    # a day of simulated time in a few thousand ticks, no clock read anywhere
    engine = RuleEngine(Policy())
    n_fired = 0
    for i in range(2880):
        n_fired += len(fired(engine.evaluate(Signals(t_s=i * 30.0, drift_detected=True))))
    assert n_fired == 24 * 4  # the cooldown (300 s) would allow 12 an hour; max_per_hour is 4
