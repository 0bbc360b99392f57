"""Candidate building, in this process and in the worker process the daemon uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from regulator.errors import AdaptationError
from regulator.meta.model import ModelBundle
from regulator.service.candidate import (
    CandidateRequest,
    build_candidate,
)
from regulator.service.executor import ProcessExecutor
from regulator.tasks.base import make_family


def _request(prior: Path, out: Path, margin: float = 1.0) -> CandidateRequest:
    fam = make_family("nanosensor")
    rng = np.random.default_rng(3)
    env = fam.environment_from_seed(7)
    sx, sy = fam.sample(env, 15, rng, classes=np.repeat(np.arange(5), 3))
    hx, hy = fam.sample(env, 10, rng, classes=np.repeat(np.arange(5), 2))
    recent, _ = fam.sample(env, 60, rng)
    return CandidateRequest(
        model_dir=str(prior),
        profile="loihi",
        seed=0,
        mode="supervised",
        support_x=sx,
        support_y=sy,
        holdout_x=hx,
        holdout_y=hy,
        recent_x=recent,
        margin=margin,
        out_dir=str(out),
    )


def test_inline_candidate_is_written_and_loads(tiny_prior: Path, tmp_path: Path) -> None:
    res = build_candidate(_request(tiny_prior, tmp_path))  # margin 1: always accepted
    assert res.accepted and res.folder is not None
    assert res.evaluation["n_holdout"] == 10
    assert res.cost["weight_writes"] > 0 and res.cost["learning_energy_j"] > 0
    cand = ModelBundle.load(res.folder)  # checksums verified
    assert cand.calibration["ood"]  # recalibrated on the new environment
    # The serving folder is untouched.
    ModelBundle.load(tiny_prior)


def test_margin_rejects_without_writing(tiny_prior: Path, tmp_path: Path) -> None:
    res = build_candidate(_request(tiny_prior, tmp_path, margin=-2.0))  # impossible bar
    assert not res.accepted and res.folder is None
    assert not (tmp_path / "model").exists()


def test_worker_process_builds_and_times_out(tiny_prior: Path, tmp_path: Path) -> None:
    ex = ProcessExecutor()
    try:
        assert ex.warm() > 0
        res = ex.run(build_candidate, _request(tiny_prior, tmp_path / "a"), timeout_s=120.0)
        assert res.accepted and res.folder is not None and Path(res.folder).is_dir()
        with pytest.raises(AdaptationError, match="timed out"):
            ex.run(build_candidate, _request(tiny_prior, tmp_path / "b"), timeout_s=0.001)
        # A fresh worker takes over after the timeout killed the old one.
        res = ex.run(build_candidate, _request(tiny_prior, tmp_path / "c"), timeout_s=120.0)
        assert res.accepted
    finally:
        ex.shutdown(wait=False)


def test_cross_validation_checks_on_the_support_and_spends_no_label(
    tiny_prior: Path, tmp_path: Path
) -> None:
    """With ``acceptance: cross_validation`` every label adapts; the check predicts each
    fold of one label per class with a candidate adapted without it."""
    from dataclasses import replace

    req = replace(
        _request(tiny_prior, tmp_path, margin=1.0),
        holdout_x=None,
        holdout_y=None,
        acceptance="cross_validation",
    )
    res = build_candidate(req)
    ev = res.evaluation
    assert res.accepted and ev["method"] == "cross_validation", res
    assert ev["folds"] == 3 and ev["n_checked"] == 15  # 3 shots of 5 classes
    assert 0.0 <= ev["candidate"] <= 1.0 and 0.0 <= ev["serving"] <= 1.0
    assert res.cost["cross_validation_energy_j"] > 0  # the folds' forwards are counted
    worse = build_candidate(replace(req, margin=-2.0, out_dir=str(tmp_path / "b")))
    assert not worse.accepted and worse.folder is None
