"""Issue 11's bugs, each against a real Runtime and a real state directory: the daily
learning-energy budget, low power across a rollback, SIGHUP for every policy section,
one vocabulary of rejection reasons, conductance drift with uptime, and drift alarms
counted as detections."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from regulator.policy.model import Policy
from regulator.service.runtime import Runtime
from regulator.service.scheduler import Scheduler
from regulator.tasks.base import make_family
from tests.service.conftest import policy_dict

DEV = {"device": "dev-test"}


class Clocks:
    """A monotonic clock and a wall clock (seconds since the epoch) moved by the test."""

    def __init__(self, wall: datetime) -> None:
        self.mono = 0.0
        self.wall = wall.timestamp()

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def _runtime(state: Path, prior: Path, clocks: Clocks | None = None, **sections: Any) -> Runtime:
    clocks = clocks or Clocks(datetime(2026, 1, 1, 12, tzinfo=UTC))
    policy = Policy.model_validate(policy_dict(prior, **sections))
    return Runtime(
        policy,
        state,
        clock=lambda: clocks.mono,
        wall_clock=lambda: clocks.wall,
        inline_jobs=True,
    )


def _value(rt: Runtime, name: str, **labels: str) -> float:
    got = rt.metrics_registry.get_sample_value(name, {**DEV, **labels})
    return 0.0 if got is None else got


def _samples(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    fam = make_family("nanosensor")
    return fam.sample(fam.nominal_environment(), n, np.random.default_rng(seed))


def _labelled(rt: Runtime, n: int = 60, seed: int = 1) -> None:
    x, y = _samples(n, seed)
    rt.add_labels([(f"l{seed}-{i}", int(y[i]), x[i]) for i in range(n)])
    for i in range(40):
        rt.process(f"u{seed}-{i}", x[i % n])


# -- 1. the daily learning-energy budget ------------------------------------------------


def test_learning_budget_is_per_utc_day_persisted_and_checked_first(
    tmp_path: Path, tiny_prior: Path
) -> None:
    clocks = Clocks(datetime(2026, 1, 1, 22, 0, tzinfo=UTC))
    recal = {
        "k_shot": 3,
        "holdout_per_class": 2,
        "max_per_hour": 60,
        "learning_energy_budget_j_per_day": 1e-15,
    }
    rt = _runtime(tmp_path / "state", tiny_prior, clocks, recalibration=recal)
    try:
        _labelled(rt)
        first = rt.request_recalibration("http")
        assert first["outcome"] in ("accepted", "rejected"), first  # real work, energy spent
        assert rt.signals(clocks.mono).learning_energy_j_today > 1e-15
        clocks.advance(60)
        again = rt.request_recalibration("http")
        assert again["scheduled"] is False and "budget" in again["reason"], again
    finally:
        rt.close()
    # Persisted: a restart on the same UTC day is still over budget.
    clocks.advance(60)
    rt = _runtime(tmp_path / "state", tiny_prior, clocks, recalibration=recal)
    try:
        assert rt.signals(clocks.mono).learning_energy_j_today > 1e-15
        out = rt.request_recalibration("http")
        assert out["scheduled"] is False and "budget" in out["reason"], out
        # The next UTC day starts at 0 J, without any recalibration to reset it.
        clocks.advance(2 * 3600)
        assert rt.signals(clocks.mono).learning_energy_j_today == 0.0
        assert rt.engine.recalibration_blocked(rt.signals(clocks.mono)) is None
    finally:
        rt.close()


# -- 2. rollback keeps low power consistent ----------------------------------------------


def test_rollback_keeps_low_power(tmp_path: Path, tiny_prior: Path) -> None:
    rt = _runtime(tmp_path / "state", tiny_prior)
    v1 = rt.registry.current()
    v2 = rt.registry.add(rt.registry.path(v1), parent=v1, trigger="test")
    rt.registry.promote(v2)
    rt.close()
    rt = _runtime(tmp_path / "state", tiny_prior, recalibration={"low_power_n_steps": 5})
    try:
        full = rt.serving.bundle.cfg.n_steps
        assert rt.serving.version == v2 and rt.serving.model.n_steps == full
        rt.controls.set_low_power(True)
        assert rt.serving.model.n_steps == 5
        out = rt.controls.rollback()
        assert out["ok"] and rt.serving.version == v1
        assert rt.status()["low_power"] is True
        assert rt.serving.model.n_steps == 5  # the rolled-back model serves in low power
        rt.controls.set_low_power(False)
        assert rt.serving.model.n_steps == full  # and comes back to the model's own steps
    finally:
        rt.close()


# -- 3. SIGHUP applies every section, or refuses the whole file ---------------------------


def _set(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = data
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return data


# section -> (dotted field, new value, check on the runtime when applied; None: refused)
RELOAD_CASES: dict[str, tuple[str, Any, Callable[[Runtime], bool] | None]] = {
    "device": ("device.id", "another-chip", None),
    "model.prior": ("model.prior", "models/gas-drift", None),
    "model.n_steps": ("model.n_steps", 7, lambda rt: rt.serving.model.n_steps == 7),
    "source": ("source.rate_hz", 5, None),
    "monitors": (
        "monitors.accuracy_window_labels",
        17,
        lambda rt: rt.monitors.accuracy.config["window"] == 17,
    ),
    "monitors.detector": (
        "monitors.mean_samples_between_false_alarms",
        123.0,
        lambda rt: (
            rt.serving.ood.config["detector_config"]["mean_samples_between_false_alarms"] == 123.0
        ),
    ),
    "monitors.power_window": (
        "monitors.power_window_s",
        3.0,
        lambda rt: rt.monitors.energy.config["window_s"] == 3.0,
    ),
    "monitors.density": (
        "monitors.spike_density_window_samples",
        9,
        lambda rt: rt.monitors.density.config["window"] == 9,
    ),
    "rules": (
        "rules",
        [{"name": "r1", "action": "alert_only", "condition": {"signal": "drift_detected"}}],
        lambda rt: [r.name for r in rt.engine.policy.rules] == ["r1"],
    ),
    "recalibration": (
        "recalibration.max_per_hour",
        0,
        lambda rt: "max_per_hour 0" in str(rt.request_recalibration("http")["reason"]),
    ),
    "schedules": (
        "schedules",
        [{"id": "nightly", "kind": "interval", "every_s": 3600, "action": "alert_only"}],
        lambda rt: [j["id"] for j in rt.schedule_jobs()] == ["schedule-nightly"],
    ),
    "alerts": (
        "alerts.enabled",
        False,
        lambda rt: rt.controls.alert_action({"recalibrate": "true"}) is None,
    ),
    "http.token_env": (
        "http.token_env",
        "OTHER_TOKEN",
        lambda rt: rt.policy.http.token_env == "OTHER_TOKEN",
    ),
    "http.port": ("http.port", 1234, None),
    "logging.level": ("logging.level", "WARNING", lambda rt: rt.policy.logging.level == "WARNING"),
    "logging.format": ("logging.format", "text", None),
    "storage.keep_versions": (
        "storage.keep_versions",
        5,
        lambda rt: rt.policy.storage.keep_versions == 5,
    ),
    "storage.max_labels": ("storage.max_labels", 99, None),
    "state_dir": ("state_dir", "elsewhere", None),
}


@pytest.mark.parametrize("case", sorted(RELOAD_CASES))
def test_reload_applies_or_refuses_each_section(
    case: str, tmp_path: Path, tiny_prior: Path
) -> None:
    field, value, check = RELOAD_CASES[case]
    base = policy_dict(tiny_prior)
    policy = Policy.model_validate(base)
    sched = Scheduler()
    rt = Runtime(policy, tmp_path / "state", clock=lambda: 0.0, inline_jobs=True, scheduler=sched)
    try:
        new = Policy.model_validate(_set(policy_dict(tiny_prior), field, value))
        out = rt.reload(new)
        if check is None:
            assert not out.applied and field.split(".")[0] in out.reason, out
            assert rt.policy == policy  # the old policy is kept whole
            assert _value(rt, "regulator_policy_reload_failures_total") == 1
        else:
            assert out.applied, out
            assert rt.policy == new
            assert check(rt), case
            assert _value(rt, "regulator_policy_reload_failures_total") == 0
    finally:
        rt.close()
        sched.shutdown(wait=False)


# -- 4. one vocabulary of rejection reasons ----------------------------------------------


def test_no_reason_is_chosen_by_parsing_a_message() -> None:
    import regulator.service as service_pkg

    for path in Path(service_pkg.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "in msg" not in text and "msg = str(err)" not in text, path


def test_feedback_refusal_is_counted_under_its_own_reason() -> None:
    """A feedback body whose only label names an unknown sample is counted
    ``unknown_sample`` (it was counted ``bad_shape``)."""
    from tests.service.test_api import AUTH, Harness

    h = Harness()
    try:
        h.runtime.feedback = lambda items: {  # type: ignore[method-assign]
            "accepted": 0,
            "rejected": [{"index": 0, "reason": "unknown_sample", "detail": "not kept"}],
        }
        r = h.client.post(
            "/v1/feedback", json={"items": [{"sample_id": "gone", "y": 1}]}, headers=AUTH
        )
        assert r.status_code == 422
        assert h.value("regulator_requests_rejected_total", reason="unknown_sample") == 1
        assert not h.value("regulator_requests_rejected_total", reason="bad_shape")
    finally:
        h.close()


def test_pushed_samples_are_refused_with_typed_reasons(tmp_path: Path, tiny_prior: Path) -> None:
    """The HTTP source's refusals (queue full, non-finite, shape) reach the metrics
    under their own reasons, from the exception's ``reason``, not its wording."""
    from regulator.service.inputs import InputCheck

    rt = _runtime(tmp_path / "state", tiny_prior)
    try:
        check = InputCheck.for_bundle(rt.serving.bundle)
        x, _ = _samples(1)
        bad = x[0].copy()
        bad.flat[0] = np.nan
        reasons = []
        for arr in (bad, np.zeros((3, 3), np.float32)):
            try:
                check.sample(arr)
            except Exception as err:
                reasons.append(getattr(err, "reason", None))
        assert reasons == ["non_finite", "bad_shape"]
    finally:
        rt.close()


# -- 5. conductance drift with the chip's uptime ------------------------------------------


@pytest.mark.parametrize("speedup", [1.0, 0.0])
def test_conductance_drift_advances_with_uptime(
    tmp_path: Path, tiny_prior: Path, speedup: float
) -> None:
    clocks = Clocks(datetime(2026, 1, 1, tzinfo=UTC))
    rt = _runtime(
        tmp_path / "state",
        tiny_prior,
        clocks,
        device={"id": "dev-test", "profile": "memristive", "seed": 0, "drift_speedup": speedup},
    )
    try:
        x, _ = _samples(4)
        before = rt.process("a", x[0])["outputs"]
        clocks.advance(1e6)
        after = rt.process("b", x[0])["outputs"]
        age = rt.serving.model.chip.age_s
        assert age == pytest.approx(1e6 * speedup)
        assert _value(rt, "regulator_chip_age_seconds") == pytest.approx(1e6 * speedup)
        assert rt.status()["chip_age_s"] == pytest.approx(1e6 * speedup)
        if speedup:
            assert not np.allclose(before, after)  # the aged chip answers differently
    finally:
        rt.close()


def test_ideal_profile_does_not_age(tmp_path: Path, tiny_prior: Path) -> None:
    clocks = Clocks(datetime(2026, 1, 1, tzinfo=UTC))
    rt = _runtime(
        tmp_path / "state", tiny_prior, clocks, device={"id": "dev-test", "profile": "ideal"}
    )
    try:
        x, _ = _samples(2)
        rt.process("a", x[0])
        clocks.advance(1e6)
        rt.process("b", x[1])
        assert rt.serving.model.chip.age_s == 0.0
    finally:
        rt.close()


# -- 6. drift alarms counted as detections -------------------------------------------------


def test_drift_alarms_total_counts_detections(tmp_path: Path, tiny_prior: Path) -> None:
    rt = _runtime(
        tmp_path / "state", tiny_prior, monitors={"mean_samples_between_false_alarms": 1e6}
    )
    try:
        fam = make_family("nanosensor")
        rng = np.random.default_rng(0)
        shifted, _ = fam.sample(fam.environment_from_seed(12345), 400, rng)
        for i, row in enumerate(shifted * 3.0 + 2.0):
            rt.process(f"s{i}", row)
        raw = _value(rt, "regulator_drift_raw_alarms_total")
        assert raw > 1  # the detector restarts after each alarm: many raw alarms
        assert len(rt.detections) == 1
        assert _value(rt, "regulator_drift_alarms_total") == 1  # one episode
    finally:
        rt.close()
