"""Serving results kept as columns (rows made when read), samples served as one array
(checked whole, a bad row refused alone), replies that read their row lazily, and the
served inputs handed to the label intake without a lock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from regulator.errors import InputError
from regulator.policy.model import Policy
from regulator.service import intake as intake_mod
from regulator.service.inputs import InputCheck
from regulator.service.replies import Replies
from regulator.service.rows import ServedRows
from regulator.service.runtime import Runtime
from regulator.tasks.base import make_family
from tests.service.conftest import policy_dict


def test_rows_are_columns_until_read() -> None:
    err = InputError("sample holds NaN or infinite values", "non_finite")
    rows = ServedRows(
        3, ["a", "c"], np.array([2, 0]), np.array([[0.1, 0.9], [0.8, 0.2]]), "v7", {1: err}
    )
    assert len(rows) == 3 and rows.errors == {1: err}
    assert rows[1] is err and rows[-1]["sample_id"] == "c"  # type: ignore[index]
    assert np.isnan(rows.p_values).all() and rows[0]["ood_p_value"] is None  # type: ignore[index]
    block = np.array([0.3, 0.6, 0.9])
    rows.set_p_values(block, at=1)
    assert rows.p_values.tolist() == [0.6, 0.9]
    assert rows[0] == {
        "sample_id": "a",
        "prediction": 2,
        "outputs": [0.1, 0.9],
        "ood_p_value": 0.6,
        "version": "v7",
    }
    assert rows == [rows[0], err, rows[2]]  # compares as the sequence of its rows
    with pytest.raises(IndexError):
        rows[3]
    nothing = ServedRows.refused({0: err}, 1, "v7")
    assert list(nothing) == [err] and nothing.ids == []


def test_an_array_is_checked_whole_and_a_bad_row_refused_alone() -> None:
    check = InputCheck("classification", n_channels=2, length=3, n_classes=4)
    x = np.zeros((4, 2, 3))
    x[2, 1, 0] = np.nan
    x[3, 0, 2] = np.inf
    good, errors = check.array(x)
    assert good.shape == (2, 2, 3) and good.dtype == np.float32
    assert sorted(errors) == [2, 3] and {e.reason for e in errors.values()} == {"non_finite"}
    clean = np.ones((2, 2, 3), np.float32)
    kept, none = check.array(clean)
    clean[:] = 5.0  # the caller reuses its buffer: what was checked (and kept) is a copy
    assert none == {} and float(kept.max()) == 1.0
    with pytest.raises(InputError) as shape:
        check.array(np.zeros((4, 3, 3)))
    assert shape.value.reason == "bad_shape"
    with pytest.raises(InputError) as value:
        check.array([["a", "b", "c"], ["d", "e", "f"]])
    assert value.value.reason == "bad_value"


def _runtime(tmp_path: Path, prior: Path) -> Runtime:
    data = policy_dict(prior)
    data["device"]["profile"] = "ideal"  # no chip noise: the same samples, the same outputs
    return Runtime(Policy.model_validate(data), tmp_path / "state", clock=lambda: 1.0)


def _samples(n: int) -> np.ndarray:
    fam = make_family("nanosensor")
    x, _ = fam.sample(fam.nominal_environment(), n, np.random.default_rng(3))
    return x.astype(np.float32)


def test_process_array_serves_as_process_batch_and_refuses_a_bad_row_alone(
    tmp_path: Path, tiny_prior: Path
) -> None:
    x = _samples(6)
    a, b = _runtime(tmp_path / "a", tiny_prior), _runtime(tmp_path / "b", tiny_prior)
    try:
        by_list = a.process_batch([(f"s{k}", x[k]) for k in range(6)])
        by_array = b.process_array([f"s{k}" for k in range(6)], x)
        assert [r["prediction"] for r in by_array] == [r["prediction"] for r in by_list]  # type: ignore[index]
        np.testing.assert_allclose(
            [r["outputs"] for r in by_array],  # type: ignore[index]
            [r["outputs"] for r in by_list],  # type: ignore[index]
            rtol=1e-6,
        )
        bad = x.copy()
        bad[1, 0, 0] = np.nan
        n_before = b.n_samples
        out = b.process_array([f"t{k}" for k in range(6)], bad)
        assert isinstance(out[1], InputError) and out[1].reason == "non_finite"
        assert [r["sample_id"] for i, r in enumerate(out) if i != 1] == [  # type: ignore[index]
            "t0", "t2", "t3", "t4", "t5"
        ]  # fmt: skip
        assert b.n_samples == n_before + 5
        rejected = b.metrics_registry.get_sample_value(
            "regulator_samples_rejected_total", {"device": "dev-test", "reason": "non_finite"}
        )
        assert rejected == 1.0
        with pytest.raises(InputError) as mismatch:
            b.process_array(["only-one"], x[:2])
        assert mismatch.value.reason == "bad_shape"
        with pytest.raises(InputError):
            b.process_array(["u0"], np.zeros((1, 3, 3), np.float32))  # wrong channels
    finally:
        a.close()
        b.close()


def test_a_reply_reads_its_row_from_the_served_columns() -> None:
    replies = Replies()
    waiting = replies.expect("b")
    rows = ServedRows(2, ["a", "b"], np.array([1, 3]), np.zeros((2, 4)), "v1")
    replies.deliver(["a", "b"], rows)
    assert waiting.wait(0.0) and len(replies) == 0
    rows.set_p_values(np.array([0.5, 0.25]), at=0)  # filled in after delivery: still read
    assert waiting.result == {
        "sample_id": "b",
        "prediction": 3,
        "outputs": [0.0, 0.0, 0.0, 0.0],
        "ood_p_value": 0.25,
        "version": "v1",
    }
    with pytest.raises(ValueError):
        replies.expect("c")
        replies.deliver(["c"], rows)  # two results for one id


def test_served_inputs_reach_the_intake_without_a_lock_and_stay_bounded(
    tmp_path: Path, tiny_prior: Path
) -> None:
    rt = _runtime(tmp_path, tiny_prior)
    try:
        x = _samples(1)
        rt.process("first", x[0])
        # a label for a sample just served finds its input (handed over on reading)
        assert rt.add_labels([("first", 1, None)])["accepted"] == 1
        for k in range(3 * intake_mod.HANDOFF_BATCHES):
            rt.process(f"s{k}", x[0])
        assert rt.intake.n_incoming < intake_mod.HANDOFF_BATCHES  # moved on, not piling up
        assert rt.add_labels([(f"s{3 * intake_mod.HANDOFF_BATCHES - 1}", 0, None)])["accepted"] == 1
    finally:
        rt.close()


def test_samples_checked_at_the_edge_serve_as_unchecked_ones(
    tmp_path: Path, tiny_prior: Path
) -> None:
    """``checked=True`` (the HTTP source's samples, checked one by one at the edge) only
    stacks them: the same results as the checks on the serving path."""
    x = _samples(5)
    a, b = _runtime(tmp_path / "a", tiny_prior), _runtime(tmp_path / "b", tiny_prior)
    try:
        plain = a.process_batch([(f"s{k}", x[k]) for k in range(5)])
        edge = b.process_batch(
            [(f"s{k}", b.serving.check.sample(x[k])) for k in range(5)], checked=True
        )
        assert [r["prediction"] for r in edge] == [r["prediction"] for r in plain]  # type: ignore[index]
        np.testing.assert_allclose(
            [r["outputs"] for r in edge],  # type: ignore[index]
            [r["outputs"] for r in plain],  # type: ignore[index]
            rtol=1e-6,
        )
    finally:
        a.close()
        b.close()
