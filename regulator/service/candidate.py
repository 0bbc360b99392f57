"""Building a recalibration candidate: the pure, heavy part of a recalibration.

:func:`build_candidate` loads the serving model folder, adapts a clone (re-normalise on
the new environment's unlabelled inputs, then the few shots; or label-free only),
checks it against the serving model on held-out labels (or, without labels, on how
in-distribution recent inputs look), calibrates the OOD monitor on the new
environment, and writes the accepted candidate to a folder. It touches no daemon state,
so any :class:`~regulator.service.executor.Executor` can run it: inline (replay, tests)
or in a worker process, where its CPU work does not hold the daemon's GIL and so does
not delay inference.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Imported first in the worker process: quiet Norse 1.1's import-time FutureWarning
# (torch.jit.script deprecated), as the CLI does in the daemon's own process.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*")  # Future/Deprecation

import numpy as np  # noqa: E402
import torch  # noqa: E402

from regulator.chip.network import ChipInstance  # noqa: E402
from regulator.chip.profiles import load_profile  # noqa: E402
from regulator.errors import InputError  # noqa: E402
from regulator.meta.adapt import adapt  # noqa: E402
from regulator.meta.model import ChipModel, ModelBundle  # noqa: E402
from regulator.meta.train import calibrate  # noqa: E402

log = logging.getLogger(__name__)

MIN_RECENT = 20  # unlabelled inputs needed to re-normalise or to check without labels
MIN_CALIBRATION = 40  # recent inputs needed to calibrate the OOD monitor on them alone


@dataclass(frozen=True)
class CandidateRequest:
    """Everything a candidate is built from (arrays ``[n, C, L]``, labels ``[n]``)."""

    model_dir: str
    profile: str | None
    seed: int
    mode: str  # "supervised" | "label_free"
    support_x: np.ndarray | None
    support_y: np.ndarray | None
    holdout_x: np.ndarray | None
    holdout_y: np.ndarray | None
    recent_x: np.ndarray
    margin: float
    out_dir: str
    acceptance: str = "holdout"  # "holdout" | "cross_validation" (policy recalibration)


@dataclass(frozen=True)
class CandidateResult:
    """The verdict; ``folder`` holds the candidate model when ``accepted``."""

    accepted: bool
    reason: str
    evaluation: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)
    folder: str | None = None


def _load(req: CandidateRequest) -> ModelBundle:
    bundle = ModelBundle.load(req.model_dir)
    if req.profile is not None and req.profile != bundle.profile.name:
        bundle.profile = load_profile(req.profile)
    return bundle


def _score(bundle: ModelBundle, x: np.ndarray, y: np.ndarray, seed: int) -> float:
    with torch.no_grad():
        pred = ChipModel(bundle, seed=seed).predict(x)
    if bundle.kind == "classification":
        return float((pred.labels == y).mean())
    return float(np.abs(np.asarray(pred.labels).reshape(len(y), -1)[:, 0] - y).mean())


def _ood_check(
    serving: ModelBundle, candidate: ModelBundle, recent: np.ndarray, seed: int
) -> tuple[bool, str]:
    """Without held-out labels: accept only if recent inputs look more in-distribution to
    the candidate than to the serving model (mean p-value, serving's calibration)."""
    from regulator.monitor.conformal import CalibratedScorer

    if len(recent) < MIN_RECENT:
        return False, "no held-out labels and too few recent samples to check"
    ref = serving.calibration.get("ood")
    if not ref:
        return False, "no held-out labels and no OOD calibration to check against"
    scorer = CalibratedScorer.from_dict(ref)
    with torch.no_grad():
        ps = ChipModel(serving, seed=seed).predict(recent)
        pc = ChipModel(candidate, seed=seed).predict(recent)
    p_s = float(np.mean(scorer.p_values(ps.hidden_counts, ps.outputs)))
    p_c = float(np.mean(scorer.p_values(pc.hidden_counts, pc.outputs)))
    why = f"no held-out labels; mean OOD p-value on recent inputs {p_c:.3f} vs serving {p_s:.3f}"
    return p_c > p_s, why


def _folds(y: np.ndarray, most: int = 5) -> list[np.ndarray]:
    """Up to ``most`` folds of the support, each holding one label of every class that
    has at least two (so that each fold's candidate still sees that class)."""
    by_cls = [np.flatnonzero(y == c) for c in np.unique(y)]
    by_cls = [idx for idx in by_cls if len(idx) >= 2]
    n = min(most, max((len(idx) for idx in by_cls), default=0))
    return [np.asarray([idx[j] for idx in by_cls if j < len(idx)]) for j in range(n)]


def _cross_validate(
    start: ModelBundle, serving: ModelBundle, req: CandidateRequest, chip: ChipInstance
) -> tuple[bool, str, dict[str, Any], float]:
    """The candidate's accuracy (or error) on the support by cross-validation — each
    fold predicted by a clone adapted on the other labels, weights written exactly (no
    chip write noise: a host-side estimate) — against the serving model on the same
    labels. Returns (accept, why, evaluation, learning joules of the folds)."""
    assert req.support_x is not None and req.support_y is not None
    x, y = np.asarray(req.support_x, np.float32), np.asarray(req.support_y)
    folds = _folds(y)
    if not folds:
        return False, "cross-validation needs at least two labels of some class", {}, 0.0
    classify = serving.kind == "classification"
    cand_hits: list[np.ndarray] = []
    joules = 0.0
    for val in folds:
        train = np.setdiff1d(np.arange(len(y)), val)
        model, rep = adapt(start, x[train], y[train], chip, chip_writes=False)
        joules += float(rep.learning_energy_j)
        with torch.no_grad():
            pred = ChipModel(model, seed=req.seed).predict(x[val])
        out = np.asarray(pred.labels).reshape(len(val), -1)[:, 0]
        cand_hits.append(out == y[val] if classify else np.abs(out - y[val]))
    checked = np.concatenate(folds)
    cand = float(np.concatenate(cand_hits).mean())
    base = _score(serving, x[checked], y[checked], req.seed)
    m = req.margin
    evaluation = {"method": "cross_validation", "folds": len(folds), "n_checked": len(checked),
                  "n_holdout": 0, "serving": base, "candidate": cand}  # fmt: skip
    if classify:
        why = f"cross-validated accuracy {cand:.3f} vs serving {base:.3f} (margin {m})"
        return cand >= base - m, why, evaluation, joules
    why = f"cross-validated error {cand:.4f} vs serving {base:.4f} (margin {m})"
    return cand <= base + m, why, evaluation, joules


def build_candidate(req: CandidateRequest) -> CandidateResult:
    """Adapt, check and (if accepted) write a candidate; see the module docstring."""
    from regulator.meta.labelfree import recalibrate_label_free

    serving = _load(req)
    chip = ChipInstance.create(serving.profile, serving.cfg, req.seed)
    recent = np.asarray(req.recent_x, dtype=np.float32)
    cost: dict[str, Any]
    start = serving
    if req.mode == "supervised":
        if req.support_x is None or req.support_y is None or len(req.support_x) == 0:
            raise InputError("a supervised recalibration needs labelled support samples")
        start, lf_j = serving, 0.0
        # A prior with episodic normalisation re-fits its normaliser on the support in
        # adapt(), which would discard a re-normalisation done here (and homeostasis
        # tuned to it): as in the offline protocol, the shots alone set it.
        if len(recent) >= MIN_RECENT and not serving.episode_normalisation:
            # Re-normalise on unlabelled inputs of the new environment first; the few
            # shots then only have to fix what normalisation cannot.
            start, lf = recalibrate_label_free(serving, recent, chip)
            lf_j = float(lf.to_dict().get("learning_energy_j", 0.0))
        candidate, report = adapt(start, req.support_x, req.support_y, chip)
        cost = report.to_dict()
        cost["label_free_energy_j"] = lf_j
        cost["learning_energy_j"] = float(cost["learning_energy_j"]) + lf_j
        cost["renormalised_on"] = len(recent)
    else:
        if len(recent) < MIN_RECENT:
            raise InputError(
                f"label-free recalibration needs >= {MIN_RECENT} recent samples, have {len(recent)}"
            )
        candidate, lf = recalibrate_label_free(serving, recent, chip)
        cost = lf.to_dict()
    evaluation: dict[str, Any] = {"n_holdout": 0}
    cv = req.acceptance == "cross_validation" and req.mode == "supervised"
    if cv and req.support_x is not None and req.support_y is not None:
        ok, why, evaluation, cv_j = _cross_validate(start, serving, req, chip)
        cost["cross_validation_energy_j"] = cv_j
        cost["learning_energy_j"] = float(cost["learning_energy_j"]) + cv_j
    elif req.holdout_x is not None and req.holdout_y is not None and len(req.holdout_x):
        base = _score(serving, req.holdout_x, req.holdout_y, req.seed)
        cand = _score(candidate, req.holdout_x, req.holdout_y, req.seed)
        evaluation = {"n_holdout": len(req.holdout_x), "serving": base, "candidate": cand}
        m = req.margin
        if serving.kind == "classification":
            ok = cand >= base - m
            why = f"held-out accuracy {cand:.3f} vs serving {base:.3f} (margin {m})"
        else:
            ok = cand <= base + m
            why = f"held-out error {cand:.4f} vs serving {base:.4f} (margin {m})"
    else:
        ok, why = _ood_check(serving, candidate, recent, req.seed)
    if not ok:
        return CandidateResult(False, why, evaluation, cost)
    # Calibrate the OOD monitor on the new environment before the candidate serves.
    if len(recent) >= MIN_CALIBRATION:
        calib_x = recent
    else:
        parts = [a for a in (req.support_x, req.holdout_x) if a is not None and len(a)]
        calib_x = np.concatenate(parts) if parts else recent
    candidate.calibration = {**candidate.calibration, **calibrate(candidate, calib_x, req.seed)}
    folder = Path(req.out_dir) / "model"
    candidate.save(folder)
    return CandidateResult(True, why, evaluation, cost, str(folder))
