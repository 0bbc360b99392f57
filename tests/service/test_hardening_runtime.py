"""Issue 12's defects, in-process against a real Runtime and a real state directory:
the poisoned label, the stuck key, max_per_hour spent on waiting, damaged state at
start, and leftovers of interrupted work."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from regulator.policy.model import Policy
from regulator.service.runtime import Runtime
from regulator.service.state import Label
from regulator.tasks.base import make_family
from tests.service.conftest import policy_dict


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
