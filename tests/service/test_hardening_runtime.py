"""Issue 12's defects, in-process against a real Runtime and a real state directory:
the poisoned label, the stuck key, max_per_hour spent on waiting, damaged state at
start, and leftovers of interrupted work."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from regulator.errors import AdaptationError
from regulator.policy.engine import Decision
from regulator.policy.model import Policy
from regulator.service.executor import InlineExecutor
from regulator.service.runtime import Runtime
from regulator.service.state import Label
from regulator.tasks.base import make_family
from tests.service.conftest import policy_dict

T = TypeVar("T")


def _runtime(tmp_path: Path, prior: Path, **sections: Any) -> Runtime:
    policy = Policy.model_validate(policy_dict(prior, **sections))
    return Runtime(policy, tmp_path / "state", clock=lambda: 0.0, inline_jobs=True)


def _value(rt: Runtime, name: str, **labels: str) -> float:
    got = rt.metrics_registry.get_sample_value(name, {"device": "dev-test", **labels})
    return 0.0 if got is None else got


def _samples(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    fam = make_family("nanosensor")
    return fam.sample(fam.nominal_environment(), n, np.random.default_rng(seed))


# -- the poisoned label --------------------------------------------------------------------


def test_label_that_does_not_fit_the_model_is_refused(tmp_path: Path, tiny_prior: Path) -> None:
    rt = _runtime(tmp_path, tiny_prior)
    try:
        x, y = _samples(1)
        out = rt.add_labels(
            [
                ("wrong-shape", 0, np.zeros((3, 3), np.float32)),
                ("bool-class", True, x[0]),
                ("class-past-outputs", 10_000, x[0]),
                ("good", int(y[0]), x[0]),
            ]
        )
        assert out["accepted"] == 1
        assert [(r["index"], r["reason"]) for r in out["rejected"]] == [
            (0, "bad_shape"),
            (1, "bad_label"),
            (2, "bad_label"),
        ]
        assert [lab.sample_id for lab in rt.state.labels.all()] == ["good"]
        assert _value(rt, "regulator_samples_rejected_total", reason="bad_shape") == 1
    finally:
        rt.close()


def test_a_stored_bad_label_is_skipped_not_fatal(tmp_path: Path, tiny_prior: Path) -> None:
    """A label stored before the edge checked it (3x3, as in the issue) used to make
    every recalibration fail with 'all input arrays must have the same shape'."""
    rt = _runtime(tmp_path, tiny_prior)
    try:
        x, y = _samples(200, seed=1)
        rt.state.labels.add([Label("poison", np.zeros((3, 3), np.float32), 0, 0.0)])
        rt.add_labels([(f"l{i}", int(y[i]), x[i]) for i in range(len(y))])
        for i in range(60):
            rt.process(f"u{i}", x[i % len(x)])
        res = rt.recalibrate("http", "supervised")
        assert res.outcome in ("accepted", "rejected"), res
        assert _value(rt, "regulator_labels_skipped_total", reason="bad_shape") == 1
    finally:
        rt.close()


def test_stored_labels_are_checked_once_per_served_input(
    tmp_path: Path, tiny_prior: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every recalibration reads the environment's labels again; each used to be checked
    again too (~1.5 us a label of the recalibration thread's GIL time, 4-5 ms with 3,000
    labels). A stored label is checked once per served model input; a bad one is still
    skipped and counted at every recalibration."""
    from regulator.service.inputs import InputCheck

    rt = _runtime(tmp_path, tiny_prior)
    try:
        x, y = _samples(40, seed=2)
        rt.state.labels.add([Label("poison", np.zeros((3, 3), np.float32), 0, 0.0)])
        rt.add_labels([(f"l{i}", int(y[i]), x[i]) for i in range(len(y))])
        calls = [0]
        real = InputCheck.sample

        def counting(self: InputCheck, xs: Any) -> Any:
            calls[0] += 1
            return real(self, xs)

        monkeypatch.setattr(InputCheck, "sample", counting)
        check = rt.serving.check
        first = rt.intake.labels_since(-1.0, check, count=True)
        assert len(first) == 40 and calls[0] == 41
        again = rt.intake.labels_since(-1.0, check, count=True)
        assert [lab.sample_id for lab in again] == [lab.sample_id for lab in first]
        assert calls[0] == 41  # nothing checked again
        assert _value(rt, "regulator_labels_skipped_total", reason="bad_shape") == 2
        rt.add_labels([("new", int(y[0]), x[0])])
        calls[0] = 0
        assert len(rt.intake.labels_since(-1.0, check, count=False)) == 41
        assert calls[0] == 1  # the new label only
        # another served input contract checks everything afresh
        other = InputCheck(check.kind, check.n_channels, check.length, check.n_classes - 1)
        calls[0] = 0
        rt.intake.labels_since(-1.0, other, count=False)
        assert calls[0] == 42
    finally:
        rt.close()


# -- the stuck key and max_per_hour ----------------------------------------------------------


def test_a_refused_request_releases_its_key(tmp_path: Path, tiny_prior: Path) -> None:
    rt = _runtime(tmp_path, tiny_prior, recalibration={"max_per_hour": 0})
    try:
        for _ in range(3):  # every repeat is refused for the limit, never as a duplicate
            out = rt.request_recalibration("alert", key="fp-1")
            assert out["scheduled"] is False and "max_per_hour 0" in out["reason"], out
        assert not rt.recal.state.keys
    finally:
        rt.close()


def test_waiting_for_labels_does_not_spend_max_per_hour(tmp_path: Path, tiny_prior: Path) -> None:
    rt = _runtime(tmp_path, tiny_prior, recalibration={"max_per_hour": 1, "k_shot": 3})
    try:
        for _ in range(3):
            out = rt.request_recalibration("http")
            assert out["outcome"] == "skipped" and "waiting for" in out["reason"], out
        signals = rt.signals(0.0)
        assert signals.recalibrations_last_hour == 0
        assert rt.engine.recalibration_blocked(signals) is None
    finally:
        rt.close()


class _FailingExecutor(InlineExecutor):
    """Every candidate build fails as a timed-out worker would: the recalibration has
    started (it counts against max_per_hour) and ends at once."""

    def run(self, fn: Callable[..., T], *args: Any, timeout_s: float) -> T:
        raise AdaptationError(f"job timed out after {timeout_s:.0f} s")


def _ready_runtime(tmp_path: Path, prior: Path, clock: list[float], **recal: Any) -> Runtime:
    """A runtime with enough labels that a supervised recalibration starts real work."""
    policy = Policy.model_validate(
        policy_dict(prior, recalibration={"k_shot": 3, "holdout_per_class": 2, **recal})
    )
    rt = Runtime(
        policy,
        tmp_path / "state",
        clock=lambda: clock[0],
        wall_clock=lambda: 1.7e9 + clock[0],
        inline_jobs=True,
        executor=_FailingExecutor(),
    )
    x, y = _samples(60, seed=2)
    rt.add_labels([(f"l{i}", int(y[i]), x[i]) for i in range(len(y))])
    return rt


def test_two_rule_recalibrations_at_one_tick_pass_the_hourly_limit_once(
    tmp_path: Path, tiny_prior: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay found 5 in an hour under max_per_hour 4: the engine counts a tick's
    recalibrations once, and each rule's request ran. The runtime must check and count
    each start."""
    clock = [100.0]
    rt = _ready_runtime(tmp_path, tiny_prior, clock, max_per_hour=1)
    try:
        two = [Decision(f"rule-{i}", "recalibrate_supervised", "drift", 100.0) for i in (1, 2)]
        monkeypatch.setattr(rt.engine, "evaluate", lambda signals: two)
        rt.tick()
        outcomes = [(r.outcome, r.reason) for r in rt.results]
        assert len(outcomes) == 2, outcomes
        assert outcomes[0][0] == "failed", outcomes  # started: real work
        assert outcomes[1] == ("skipped", "1 recalibrations in the last hour (max_per_hour 1)")
        assert rt.hourly.last_hour(clock[0]) == 1
    finally:
        rt.close()


def test_a_restart_keeps_the_hourly_count(tmp_path: Path, tiny_prior: Path) -> None:
    clock = [100.0]
    rt = _ready_runtime(tmp_path, tiny_prior, clock, max_per_hour=2)
    try:
        assert [rt.recalibrate("http", "supervised").outcome for _ in range(2)] == ["failed"] * 2
    finally:
        rt.close()
    clock[0] = 1_000.0  # 15 minutes later
    rt = _ready_runtime(tmp_path, tiny_prior, clock, max_per_hour=2)
    try:
        assert rt.hourly.last_hour(clock[0]) == 2
        out = rt.request_recalibration("http")
        assert out["scheduled"] is False and "max_per_hour 2" in out["reason"], out
        res = rt.recalibrate("http", "supervised")  # the job itself checks too
        assert res.outcome == "skipped" and "max_per_hour 2" in res.reason, res
        clock[0] = 100.0 + 3_600.0  # an hour after those two started: free again
        assert rt.hourly.last_hour(clock[0]) == 0
        assert rt.recalibrate("http", "supervised").outcome == "failed"
    finally:
        rt.close()


def test_an_expected_refusal_logs_one_line_without_a_traceback(
    tmp_path: Path, tiny_prior: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [100.0]
    rt = _ready_runtime(tmp_path, tiny_prior, clock, max_per_hour=1)
    try:
        with caplog.at_level(logging.INFO, logger="regulator"):
            rt.recalibrate("http", "supervised")  # the worker timed out
            rt.recalibrate("http", "supervised")  # refused by the hourly limit
            rt.recalibrate("http", "label_free")  # too few recent samples
            rt.add_labels([("bad", 0, np.zeros((3, 3), np.float32))])  # refused at the edge
        records = [r for r in caplog.records if r.name.startswith("regulator")]
        assert records
        assert [r.getMessage() for r in records if r.exc_info or r.exc_text] == []
        text = "\n".join(r.getMessage() for r in records)
        assert "recalibration failed: job timed out" in text
        assert "max_per_hour 1" in text and "needs >= 20 recent samples" in text
    finally:
        rt.close()


def test_liveness_ignores_a_wall_clock_jump(
    tmp_path: Path, tiny_prior: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = _runtime(tmp_path, tiny_prior)
    try:
        rt.tick()
        real = time.time
        for jump_s in (86_400.0, -86_400.0):  # NTP steps the clock a day either way
            monkeypatch.setattr(time, "time", lambda j=jump_s: real() + j)
            assert 0.0 <= rt.healthy_since_tick_s < 5.0
            rt.tick()
            assert 0.0 <= rt.healthy_since_tick_s < 5.0
    finally:
        monkeypatch.undo()
        rt.close()


# -- damaged state at start ------------------------------------------------------------------


def _three_versions(tmp_path: Path, prior: Path) -> Path:
    rt = _runtime(tmp_path, prior)
    try:
        v1 = rt.registry.current()
        assert v1 == "v000001"
        v2 = rt.registry.add(rt.registry.path(v1), parent=v1, trigger="test")
        rt.registry.promote(v2)
        v3 = rt.registry.add(rt.registry.path(v2), parent=v2, trigger="test")
        rt.registry.promote(v3)
    finally:
        rt.close()
    return tmp_path / "state" / "registry"


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    # case: (what to do to the registry, version that must serve)
    "weights-flipped": (lambda r: _flip(r / "v000003" / "weights.safetensors"), "v000002"),
    "weights-zeroed": (
        lambda r: (r / "v000003" / "weights.safetensors").write_bytes(
            bytes((r / "v000003" / "weights.safetensors").stat().st_size)
        ),
        "v000002",
    ),
    "manifest-deleted": (lambda r: (r / "v000003" / "manifest.json").unlink(), "v000002"),
    "lineage-garbled": (lambda r: (r / "v000003" / "lineage.json").write_text("{x"), "v000002"),
    "served-folder-deleted": (lambda r: shutil.rmtree(r / "v000003"), "v000002"),
    "pointer-garbled": (lambda r: (r / "current").write_bytes(b"\x00garbage"), "v000003"),
    "pointer-dangling": (
        lambda r: (r / "current").write_text('{"current": "v000099", "promoted": []}'),
        "v000003",
    ),
    "older-version-damaged": (lambda r: _flip(r / "v000001" / "weights.safetensors"), "v000003"),
    "every-version-damaged": (
        lambda r: [_flip(r / v / "weights.safetensors") for v in ("v000001", "v000002", "v000003")],
        "v000004",  # a fresh import of the shipped prior
    ),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_state_degrades_and_serves_a_sound_version(
    case: str, tmp_path: Path, tiny_prior: Path
) -> None:
    damage, expected = DAMAGE[case]
    registry = _three_versions(tmp_path, tiny_prior)
    damage(registry)
    rt = _runtime(tmp_path, tiny_prior)
    try:
        assert rt.serving.version == expected
        status = rt.status()
        assert status["degraded"] is True and status["problems"], status
        assert _value(rt, "regulator_degraded") == 1
        assert _value(rt, "regulator_registry_quarantined_total") >= 1
        x, _ = _samples(2)
        assert rt.process("after", x[0])["version"] == expected  # and it serves
        for v in rt.registry.versions():  # what is left verifies
            rt.registry.verify(v.version)
    finally:
        rt.close()
    rt = _runtime(tmp_path, tiny_prior)  # a second start finds nothing left to mend
    try:
        assert rt.serving.version == expected and rt.status()["degraded"] is False
    finally:
        rt.close()


def test_leftovers_of_interrupted_work_are_removed(tmp_path: Path, tiny_prior: Path) -> None:
    state = tmp_path / "state"
    (state / "candidate-abc123" / "model").mkdir(parents=True)
    (state / "candidate-abc123" / "model" / "weights.safetensors").write_bytes(b"x" * 100)
    (state / ".tmp-labels.jsonl.123").write_text("partial")
    rt = _runtime(tmp_path, tiny_prior)
    try:
        assert not list(state.glob("candidate-*")) and not list(state.glob(".tmp-*"))
        assert rt.status()["storage"]["orphans_removed_at_start"] == 2
    finally:
        rt.close()
