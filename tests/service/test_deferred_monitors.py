"""Monitor updates deferred over a block of batches (``process_batch(defer=True)``, the
daemon's loop with more queued) end where updating them batch by batch ends: the same
p-values in the results, the same detection at the same sample, the same signals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from regulator.policy.model import Policy
from regulator.service import inference
from regulator.service.recent import RecentInputs
from regulator.service.rows import ServedRows
from regulator.service.runtime import Runtime
from regulator.tasks.base import make_family
from tests.service.conftest import policy_dict


def _runtime(tmp_path: Path, prior: Path) -> tuple[Runtime, list[float]]:
    clock = [0.0]
    data = policy_dict(prior, monitors={"mean_samples_between_false_alarms": 1e6})
    data["device"]["profile"] = "ideal"  # no chip noise: both runtimes serve the same
    rt = Runtime(Policy.model_validate(data), tmp_path / "state", clock=lambda: clock[0])
    return rt, clock


def _stream() -> np.ndarray:
    fam = make_family("nanosensor")
    rng = np.random.default_rng(0)
    nominal, _ = fam.sample(fam.nominal_environment(), 160, rng)
    shifted, _ = fam.sample(fam.environment_from_seed(12345), 320, rng)
    return np.concatenate([nominal, shifted * 3.0 + 2.0])


def _serve(rt: Runtime, clock: list[float], x: np.ndarray, defer: bool) -> list[ServedRows]:
    out: list[ServedRows] = []
    for i in range(0, len(x), 8):
        clock[0] = i * 0.05
        items = [(f"s{i + k}", x[i + k]) for k in range(8)]
        out.append(rt.process_batch(items, defer=defer))
    return out


def _rows(served: list[ServedRows]) -> list[dict[str, Any]]:
    """The rows as read now (a row is made when it is read)."""
    rows = [r for res in served for r in res]
    assert all(isinstance(r, dict) for r in rows)
    return rows  # type: ignore[return-value]


def test_deferred_updates_match_eager_ones(
    tmp_path: Path, tiny_prior: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inference, "DEFER_S", 1e9)  # blocks by samples only
    x = _stream()
    eager, clock_e = _runtime(tmp_path / "eager", tiny_prior)
    lazy, clock_l = _runtime(tmp_path / "lazy", tiny_prior)
    try:
        got_e = _rows(_serve(eager, clock_e, x, defer=False))
        served_l = _serve(lazy, clock_l, x, defer=True)
        # the newest block waits for its flush: no p-value yet, and it says so
        assert lazy.inference.n_deferred > 0
        assert _rows(served_l)[-1]["ood_p_value"] is None
        lazy.flush()
        assert lazy.inference.n_deferred == 0
        got_l = _rows(served_l)
        p_e = [r["ood_p_value"] for r in got_e]
        p_l = [r["ood_p_value"] for r in got_l]
        assert None not in p_l
        np.testing.assert_allclose(p_l, p_e)
        assert [r["prediction"] for r in got_l] == [r["prediction"] for r in got_e]
        assert len(eager.detections) == 1
        assert [d["sample"] for d in lazy.detections] == [d["sample"] for d in eager.detections]
        s_e, s_l = eager.snapshot(), lazy.snapshot()
        assert s_l.drift_detected and s_e.drift_detected
        assert s_l.drift_statistic == pytest.approx(s_e.drift_statistic)
        assert s_l.raw_alarms == s_e.raw_alarms
        assert s_l.spike_density == pytest.approx(s_e.spike_density)
        assert s_l.energy_j_total == pytest.approx(s_e.energy_j_total)
    finally:
        eager.close()
        lazy.close()


def test_a_block_waits_at_most_its_samples(
    tmp_path: Path, tiny_prior: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inference, "DEFER_S", 1e9)
    monkeypatch.setattr(inference, "DEFER_SAMPLES", 24)
    rt, _clock = _runtime(tmp_path, tiny_prior)
    try:
        x = _stream()[:40]
        waiting = []
        for i in range(0, 40, 8):
            rt.process_batch([(f"s{i + k}", x[i + k]) for k in range(8)], defer=True)
            waiting.append(rt.inference.n_deferred)
        assert waiting == [8, 16, 0, 8, 16]  # the third batch reached 24 and flushed
    finally:
        rt.close()


def test_a_label_for_a_deferred_prediction_is_matched(
    tmp_path: Path, tiny_prior: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A label may come before the flush that records its prediction: it waits for it
    instead of being lost to the accuracy window."""
    monkeypatch.setattr(inference, "DEFER_S", 1e9)
    rt, _clock = _runtime(tmp_path, tiny_prior)
    try:
        x = _stream()[:8]
        res = rt.process_batch([(f"s{k}", x[k]) for k in range(8)], defer=True)
        preds = [r["prediction"] for r in res]  # type: ignore[index]
        out = rt.add_labels([(f"s{k}", preds[k], None) for k in range(4)])
        assert out["accepted"] == 4  # the inputs were kept at serving time
        rt.flush()
        snap = rt.snapshot()
        assert snap.labels_in_window == 4 and snap.accuracy == 1.0
        assert rt.monitors.accuracy.n_unmatched_labels == 0
    finally:
        rt.close()


def test_recent_inputs_keep_the_newest_and_find_them_by_id() -> None:
    r = RecentInputs(4)
    for first in (1, 4, 7):  # batches of 3: samples 1-9
        ids = [f"s{k}" for k in range(first, first + 3)]
        r.add(ids, np.full((3, 1, 2), float(first)), float(first), first)
    assert r.get("s1") is None and r.get("s3") is None  # dropped
    x, t = r.get("s5")  # type: ignore[misc]
    assert t == 4.0 and x.tolist() == [[4.0, 4.0]]
    r.add(["s5"], np.full((1, 1, 2), 10.0), 10.0, 10)  # the same id again: newest wins
    assert r.get("s5")[1] == 10.0  # type: ignore[index]
    assert r.since(8, 0.0, 10)[:, 0, 0].tolist() == [7.0, 7.0, 10.0]
    assert r.since(0, 7.5, 10)[:, 0, 0].tolist() == [10.0]
    assert r.since(0, 0.0, 10, newest=2)[:, 0, 0].tolist() == [7.0, 10.0]
    assert r.time_of(2, 10) == 7.0  # the first kept after it
    assert r.time_of(99, 10) is None
    assert r.since(99, 0.0, 10).shape == (0,)
