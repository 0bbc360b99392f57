"""The runtime in-process: alert actions by policy, drift episodes, waiting for labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from regulator.meta.model import ChipModel, ModelBundle
from regulator.policy.model import Policy
from regulator.service.runtime import QUIET_SAMPLES, Runtime
from regulator.tasks.base import make_family
from tests.service.conftest import policy_dict


def _runtime(tmp_path: Path, prior: Path, **sections: Any) -> tuple[Runtime, list[float]]:
    clock = [0.0]
    policy = Policy.model_validate(policy_dict(prior, **sections))
    rt = Runtime(policy, tmp_path / "state", clock=lambda: clock[0], inline_jobs=True)
    return rt, clock


def test_alert_action_follows_policy(tmp_path: Path, tiny_prior: Path) -> None:
    rt, _ = _runtime(tmp_path, tiny_prior)
    try:
        assert rt.controls.alert_action({"recalibrate": "true"}) == "recalibrate_supervised"
        assert rt.controls.alert_action({"recalibrate": "false"}) is None
        assert rt.controls.alert_action({"regulator_action": "rollback"}) == "rollback"
        assert rt.controls.alert_action({"regulator_action": "low_power"}) is None  # not allowed
        assert rt.controls.alert_action({"alertname": "X"}) is None
    finally:
        rt.close()
    rt, _ = _runtime(tmp_path / "b", tiny_prior, alerts={"enabled": False})
    try:
        assert rt.controls.alert_action({"recalibrate": "true"}) is None
    finally:
        rt.close()
    rt, _ = _runtime(
        tmp_path / "c",
        tiny_prior,
        alerts={"action_label": "act", "allowed_actions": ["recalibrate_label_free"]},
    )
    try:
        named = rt.controls.alert_action({"act": "recalibrate_label_free"})
        assert named == "recalibrate_label_free"
        assert rt.controls.alert_action({"recalibrate": "true"}) is None  # supervised not allowed
    finally:
        rt.close()


def _stream(rt: Runtime, clock: list[float], x: np.ndarray, start: int) -> int:
    i = start
    for row in x:
        clock[0] = i * 0.05
        rt.process(f"s{i}", row)
        i += 1
        if i % 10 == 0:
            rt.tick()
    return i


def test_drift_episode_is_latched_and_detected_once(tmp_path: Path, tiny_prior: Path) -> None:
    rt, clock = _runtime(tmp_path, tiny_prior, monitors={"mean_samples_between_false_alarms": 1e6})
    try:
        fam = make_family("nanosensor")
        rng = np.random.default_rng(0)
        nominal, _ = fam.sample(fam.nominal_environment(), 150, rng)
        far = fam.environment_from_seed(12345)
        shifted, _ = fam.sample(far, 300, rng)
        i = _stream(rt, clock, nominal, 0)
        assert rt.detections == []  # no alarm on the environment it was calibrated on
        _stream(rt, clock, shifted * 3.0 + 2.0, i)
        assert len(rt.detections) == 1  # one shift, one detection, however many alarms
        assert rt.detections[0]["sample"] > 150
        # The episode stays latched between the detector's own per-sample alarms.
        assert rt.signals(clock[0]).drift_detected
        assert (
            rt.metrics_registry.get_sample_value("regulator_drift_detected", {"device": "dev-test"})
            == 1.0
        )
    finally:
        rt.close()


def test_quiet_spell_constant_is_sane() -> None:
    assert 50 <= QUIET_SAMPLES <= 10_000


@pytest.mark.parametrize("allow", [True, False])
def test_recalibration_waits_for_labels(tmp_path: Path, tiny_prior: Path, allow: bool) -> None:
    rt, clock = _runtime(
        tmp_path,
        tiny_prior,
        recalibration={
            "k_shot": 2,
            "holdout_per_class": 1,
            "max_per_hour": 60,
            "allow_label_free_fallback": allow,
        },
    )
    try:
        fam = make_family("nanosensor")
        rng = np.random.default_rng(1)
        x, y = fam.sample(fam.nominal_environment(), 60, rng)
        _stream(rt, clock, x, 0)
        res = rt.request_recalibration("http", mode="supervised")
        # No labels at all: nothing to adapt on and nothing to check a stopgap with.
        assert res["outcome"] == "skipped"
        needed = rt.metrics_registry.get_sample_value(
            "regulator_calibration_samples_needed", {"device": "dev-test"}
        )
        assert needed and needed > 0
        # Labels arrive (with their inputs): the next tick runs the waiting recalibration.
        clock[0] += 1.0
        rt.add_labels([(f"l{i}", int(y[i]), x[i]) for i in range(len(y))])
        n0 = len(rt.results)
        rt.tick()
        assert len(rt.results) == n0 + 1
        assert rt.results[-1].mode == "supervised"
        assert rt.results[-1].outcome in {"accepted", "rejected"}
    finally:
        rt.close()


@pytest.mark.slow
def test_shipped_prior_recovers_accuracy_after_a_shift(tmp_path: Path) -> None:
    """With the shipped nanosensor prior: a shift is detected, a supervised
    recalibration on the labels that follow is accepted, and accuracy on the new
    environment is higher after the swap than before it."""
    from regulator.service.runtime import repo_root

    prior = repo_root() / "models" / "nanosensor"
    policy = Policy.model_validate(
        {
            "model": {"prior": str(prior)},
            "source": {"kind": "http"},
            "rules": [
                {
                    "name": "drift",
                    "condition": {"signal": "drift_detected"},
                    "action": "recalibrate_supervised",
                    "cooldown_s": 5,
                }
            ],
            "recalibration": {"k_shot": 5, "holdout_per_class": 3, "max_per_hour": 60},
        }
    )
    clock = [0.0]
    rt = Runtime(policy, tmp_path / "state", clock=lambda: clock[0], inline_jobs=True)
    try:
        fam = make_family("nanosensor")
        rng = np.random.default_rng(11)
        x0, y0 = fam.sample(fam.nominal_environment(), 200, rng)
        shifted = fam.environment_from_seed(2024)
        x1, y1 = fam.sample(shifted, 900, rng)
        correct: list[tuple[str, bool]] = []
        i = 0
        for x, y in ((x0, y0), (x1, y1)):
            for k in range(len(y)):
                clock[0] = i * 0.05
                out = rt.process(f"s{i}", x[k])
                correct.append((out["version"], out["prediction"] == int(y[k])))
                if i % 2 == 0:  # half the samples get their label back, 2 samples later
                    rt.add_labels([(f"s{i}", int(y[k]), None)])
                i += 1
                if i % 10 == 0:
                    rt.tick()
        assert rt.detections and rt.detections[0]["sample"] > 200
        accepted = [r for r in rt.results if r.outcome == "accepted"]
        assert accepted, [(r.outcome, r.reason) for r in rt.results]
        # What the unadapted prior scores on the new environment, against what is
        # served once the recalibrations are in (the last 400 samples).
        with torch.no_grad():
            prior_pred = ChipModel(ModelBundle.load(prior), seed=0).predict(x1).labels
        prior_acc = float(np.mean(prior_pred == y1))
        served_acc = float(np.mean([ok for _, ok in correct[-400:]]))
        assert {v for v, _ in correct[-400:]} != {"v000001"}
        print(f"prior on the new environment {prior_acc:.3f}, served {served_acc:.3f}")
        assert served_acc > prior_acc + 0.1, (prior_acc, served_acc)
    finally:
        rt.close()


@pytest.mark.parametrize("trigger", ["rule", "http"])
def test_a_waiting_recalibration_runs_when_labels_arrive(
    tmp_path: Path, tiny_prior: Path, trigger: str
) -> None:
    """Whoever asked, a recalibration that waits for labels runs at the first tick after
    they arrive (a rule's request was refused as 'waiting' by its own retry)."""
    rt, clock = _runtime(tmp_path, tiny_prior, recalibration={"k_shot": 2, "holdout_per_class": 1,
                         "max_per_hour": 60, "allow_label_free_fallback": False})  # fmt: skip
    try:
        fam = make_family("nanosensor")
        x, y = fam.sample(fam.nominal_environment(), 60, np.random.default_rng(2))
        _stream(rt, clock, x, 0)
        out = rt.request_recalibration(trigger)  # type: ignore[arg-type]
        assert out["outcome"] == "skipped"
        assert rt.status()["recalibration"]["phase"] == "waiting"
        clock[0] += 1.0
        rt.add_labels([(f"l{i}", int(y[i]), x[i]) for i in range(len(y))])
        n0 = len(rt.results)
        rt.tick()
        assert len(rt.results) == n0 + 1 and rt.results[-1].outcome in {"accepted", "rejected"}
        assert rt.status()["recalibration"]["phase"] == "idle"
    finally:
        rt.close()


def test_labels_after_the_swap_refine_the_served_model(tmp_path: Path, tiny_prior: Path) -> None:
    """Event-driven refinement: once k_shot labels per class arrive on the swapped-in
    model's predictions and its error is above ``refine_error_above``, a recalibration
    with trigger ``labels`` adapts on every label of the environment."""
    rt, clock = _runtime(
        tmp_path,
        tiny_prior,
        recalibration={"k_shot": 2, "acceptance": "cross_validation", "acceptance_margin": 1.0,
                       "max_per_hour": 60, "refine_error_above": 0.0,
                       "max_shots_per_class": 50},
    )  # fmt: skip
    try:
        fam = make_family("nanosensor")
        env = fam.environment_from_seed(99)
        x, y = fam.sample(env, 200, np.random.default_rng(4))
        rt.add_labels([(f"l{i}", int(y[i]), x[i]) for i in range(20)])
        first = rt.request_recalibration("http")
        assert first["outcome"] == "accepted", first
        assert rt.results[-1].evaluation["method"] == "cross_validation"
        n_support = len(rt.registry.info(rt.serving.version).data_used["support"])
        i = _stream(rt, clock, x[20:], 20)
        assert i == 200
        rt.add_labels([(f"s{j}", int(y[j]), None) for j in range(20, 200)])
        refined = [r for r in rt.results if r.trigger == "labels"]
        assert refined, [r.to_dict() for r in rt.results]
        if refined[-1].outcome == "accepted":
            used = rt.registry.info(rt.serving.version).data_used["support"]
            assert len(used) > n_support  # the episode's later labels adapted too
        assert (
            rt.metrics_registry.get_sample_value(
                "regulator_recalibrations_total",
                {"device": "dev-test", "trigger": "labels", "outcome": refined[-1].outcome},
            )
            == 1.0
        )
    finally:
        rt.close()


def test_a_label_free_stopgap_keeps_the_supervised_request_waiting(
    tmp_path: Path, tiny_prior: Path
) -> None:
    """Labels short: the label-free stopgap runs meanwhile, and the supervised
    recalibration still runs once the labels are there (it was dropped after the stopgap,
    so the embedded default served a stopgap for a whole environment)."""
    rt, clock = _runtime(tmp_path, tiny_prior, recalibration={"k_shot": 3, "holdout_per_class": 1,
                         "max_per_hour": 60, "allow_label_free_fallback": True})  # fmt: skip
    try:
        fam = make_family("nanosensor")
        x, y = fam.sample(fam.nominal_environment(), 200, np.random.default_rng(5))
        _stream(rt, clock, x[:60], 0)
        one_each = [int(np.flatnonzero(y == c)[0]) for c in np.unique(y)]
        rt.add_labels([(f"h{i}", int(y[i]), x[i]) for i in one_each])
        rt.request_recalibration("http")
        assert rt.results[-1].mode == "label_free"
        assert rt.status()["recalibration"]["phase"] == "waiting"
        clock[0] += 1.0
        rt.add_labels([(f"l{i}", int(y[i]), x[i]) for i in range(60, 200)])
        rt.tick()
        assert rt.results[-1].mode == "supervised"
        assert rt.results[-1].outcome in {"accepted", "rejected"}
    finally:
        rt.close()


def test_interval_schedules_run_on_the_runtime_clock(tmp_path: Path, tiny_prior: Path) -> None:
    """Interval schedules are due by the runtime's clock (monotonic in the daemon,
    simulated in replay), from the tick: a wall-clock step cannot stall them."""
    rt, clock = _runtime(
        tmp_path,
        tiny_prior,
        schedules=[{"id": "beat", "kind": "interval", "every_s": 10, "action": "alert_only"}],
    )
    try:

        def runs() -> int:
            return sum(e["kind"] == "alert" for e in rt.state.events.read_all())

        for t, expected in ((5.0, 0), (10.0, 1), (15.0, 1), (45.0, 2), (50.0, 3)):
            clock[0] = t
            rt.tick()
            assert runs() == expected, t
        assert [j["id"] for j in rt.schedule_jobs()] == ["schedule-beat"]
    finally:
        rt.close()
