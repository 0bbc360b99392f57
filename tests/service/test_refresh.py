"""Label-free refresh: during a drift episode with no labelled recalibration yet, the
runtime re-normalises again as unlabelled samples of the new environment accrue, each
time on a larger window that starts at the change point."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from regulator.policy.model import Policy
from regulator.service.candidate import CandidateRequest
from regulator.service.executor import InlineExecutor
from regulator.service.runtime import Runtime
from regulator.tasks.base import make_family
from tests.service.conftest import policy_dict

T = TypeVar("T")


class Recording(InlineExecutor):
    """Inline, keeping every candidate request."""

    def __init__(self) -> None:
        self.requests: list[CandidateRequest] = []

    def run(self, fn: Callable[..., T], *args: Any, timeout_s: float) -> T:
        self.requests.append(args[0])
        return super().run(fn, *args, timeout_s=timeout_s)


def _run(
    tmp_path: Path,
    prior: Path,
    rules: list[dict[str, Any]] | None = None,
    at: dict[int, Callable[[Runtime], None]] | None = None,
    **recalibration: Any,
) -> tuple[Runtime, Recording]:
    """150 nominal samples, then 400 of a far environment; ``at[i]`` runs before
    sample ``i``."""
    policy = Policy.model_validate(
        policy_dict(
            prior,
            monitors={"mean_samples_between_false_alarms": 1e6},
            rules=rules or [],
            recalibration={"max_per_hour": 60, "acceptance_margin": 1.0, **recalibration},
        )
    )
    ex = Recording()
    clock = [0.0]
    rt = Runtime(policy, tmp_path / "state", clock=lambda: clock[0], inline_jobs=True, executor=ex)
    rows = [*NOMINAL, *SHIFTED]
    for i, row in enumerate(rows):
        clock[0] = i * 0.05
        if at and i in at:
            at[i](rt)
        rt.process(f"s{i}", row)
        if (i + 1) % 10 == 0:
            rt.tick()
    return rt, ex


_FAM = make_family("nanosensor")
_RNG = np.random.default_rng(0)
NOMINAL, _ = _FAM.sample(_FAM.nominal_environment(), 150, _RNG)
_FAR = _FAM.environment_from_seed(12345)
_X, SHIFTED_Y = _FAM.sample(_FAR, 400, _RNG)
SHIFTED = _X * 3.0 + 2.0


def test_refresh_renormalises_on_growing_windows_since_the_change_point(
    tmp_path: Path, tiny_prior: Path
) -> None:
    rt, ex = _run(tmp_path, tiny_prior, label_free_refresh_factor=2.0,
                  label_free_refresh_max_samples=256)  # fmt: skip
    try:
        assert len(rt.detections) >= 1
        change = rt.recal.refresh.change_sample
        assert change is not None and change > 150  # the detector's estimate, post-shift
        refreshes = [r for r in rt.results if r.trigger == "refresh"]
        assert len(refreshes) >= 3, [r.to_dict() for r in rt.results]
        assert all(r.mode == "label_free" for r in refreshes)
        sizes = [len(req.recent_x) for req in ex.requests]
        assert len(sizes) == len(refreshes)  # each refresh built a candidate
        assert sizes == sorted(sizes) and sizes[0] >= 32 and sizes[-1] <= 256
        assert all(b >= 2 * a for a, b in itertools.pairwise(sizes) if b < 256)
        before = {row.tobytes() for row in np.asarray(NOMINAL, np.float32)}
        for req in ex.requests:
            assert not any(np.asarray(r, np.float32).tobytes() in before for r in req.recent_x)
        # A model shown worse is never swapped in: every refresh passed the check or
        # was discarded with its reason.
        for r in refreshes:
            assert r.outcome in {"accepted", "rejected"}, r.to_dict()
        counted = rt.metrics_registry.get_sample_value(
            "regulator_recalibrations_total",
            {"device": "dev-test", "trigger": "refresh", "outcome": "accepted"},
        )
        assert counted == sum(r.outcome == "accepted" for r in refreshes)
    finally:
        rt.close()


def test_refresh_is_off_by_default(tmp_path: Path, tiny_prior: Path) -> None:
    rt, ex = _run(tmp_path, tiny_prior)
    try:
        assert rt.detections and ex.requests == [] and rt.results == []
    finally:
        rt.close()


def test_refresh_keeps_the_supervised_request_waiting_and_stops_once_it_served(
    tmp_path: Path, tiny_prior: Path
) -> None:
    """The drift rule's supervised recalibration waits for labels; refreshes run
    meanwhile without dropping it; once labels arrive it runs, and after a labelled
    model serves no refresh runs in that episode."""
    phases: list[str] = []

    def labels(rt: Runtime) -> None:
        phases.append(rt.status()["recalibration"]["phase"])
        rt.add_labels([(f"l{i}", int(SHIFTED_Y[i]), SHIFTED[i]) for i in range(200, 240)])

    rt, _ = _run(
        tmp_path,
        tiny_prior,
        rules=[{"name": "drift", "condition": {"signal": "drift_detected"},
                "action": "recalibrate_supervised", "cooldown_s": 0}],
        at={150 + 250: labels},
        k_shot=2,
        acceptance="cross_validation",
        allow_label_free_fallback=False,
        label_free_refresh_factor=2.0,
    )  # fmt: skip
    try:
        triggers = [(r.trigger, r.mode, r.outcome) for r in rt.results]
        assert phases == ["waiting"], triggers  # refreshes ran; the request still waited
        first_labelled = next(
            i
            for i, r in enumerate(rt.results)
            if r.mode == "supervised" and r.outcome == "accepted"
        )
        assert any(t == "refresh" for t, _, _ in triggers[:first_labelled]), triggers
        assert all(t != "refresh" for t, _, _ in triggers[first_labelled:]), triggers
    finally:
        rt.close()


def test_a_label_free_candidate_is_checked_on_every_label_of_the_environment(
    tmp_path: Path, tiny_prior: Path
) -> None:
    """It adapts on no label, so each label of the environment checks it, even with
    ``acceptance: cross_validation`` (which keeps no holdout for a supervised one):
    before, it was checked on OOD p-values alone with these labels at hand."""
    policy = Policy.model_validate(
        policy_dict(
            tiny_prior, recalibration={"acceptance": "cross_validation", "max_per_hour": 60}
        )
    )
    rt = Runtime(policy, tmp_path / "state", clock=lambda: 1.0, inline_jobs=True)
    try:
        for i, row in enumerate(SHIFTED[:60]):
            rt.process(f"s{i}", row)
        rt.add_labels([(f"s{i}", int(SHIFTED_Y[i]), None) for i in range(12)])
        out = rt.request_recalibration("http", mode="label_free")
        res = rt.results[-1]
        assert res.mode == "label_free" and res.outcome in {"accepted", "rejected"}, out
        assert res.evaluation["n_holdout"] == 12, res.to_dict()
        assert "held-out accuracy" in res.reason
    finally:
        rt.close()


def test_a_model_adapted_with_labels_is_never_refreshed(tmp_path: Path, tiny_prior: Path) -> None:
    """A labelled model serves when the shift comes: its detection starts no refresh (on
    the gas replay such a refresh passed the OOD check and lost batch 2 nine points)."""

    def adapt_first(rt: Runtime) -> None:
        x, y = _FAM.sample(_FAM.nominal_environment(), 20, np.random.default_rng(7))
        rt.add_labels([(f"l{i}", int(y[i]), x[i]) for i in range(20)])
        assert rt.request_recalibration("http")["outcome"] == "accepted"

    rt, ex = _run(
        tmp_path,
        tiny_prior,
        at={0: adapt_first},
        k_shot=2,
        acceptance="cross_validation",
        label_free_refresh_factor=2.0,
    )
    try:
        assert rt.detections, "the shift was detected"
        assert [r.trigger for r in rt.results] == ["http"]
        assert len(ex.requests) == 1  # the supervised candidate only
    finally:
        rt.close()
