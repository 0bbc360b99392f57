"""Recalibration: clone the served model, adapt it, check it, then swap atomically or
discard (STYLE §2). Requests from every trigger pass through one
:class:`~regulator.service.jobs.RecalibrationState`; the hourly limit and the daily
learning-energy budget are checked before any work starts.

Which data it adapts on: the labels and unlabelled inputs of the *current* environment,
cut at the drift detector's change-point estimate (and at the last swap), so no sample
of the previous environment re-normalises the new one. The candidate is built by the
:class:`~regulator.service.executor.Executor` (a worker process in the daemon).
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from regulator.errors import RegulatorError
from regulator.service.actions import Trigger
from regulator.service.adopt import adopt
from regulator.service.candidate import (
    MIN_RECENT,
    CandidateRequest,
    build_candidate,
)
from regulator.service.intake import Split, split_support
from regulator.service.jobs import Mode, Outcome, RecalibrationResult, RecalibrationState, Request
from regulator.service.labels import Label
from regulator.service.refresh import LabelFreeRefresh, adapted_with_labels

if TYPE_CHECKING:
    from regulator.service.runtime import Runtime

__all__ = ["LABEL_LOOKBACK_S", "RECENT_FOR_RENORMALISATION", "Outcome", "RecalibrationResult",
           "Recalibrator"]  # fmt: skip

log = logging.getLogger(__name__)

LABEL_LOOKBACK_S = 2.0  # labels this long before a detection count as post-shift
RECENT_FOR_RENORMALISATION = 400  # newest unlabelled inputs a candidate re-normalises on


class Recalibrator:
    """Requests, the waiting for labels, and the job itself, for one runtime."""

    def __init__(self, rt: Runtime, submit: Callable[[Callable[[], Any]], bool] | None) -> None:
        self._rt = rt
        self._submit = submit  # None: run jobs inline (replay, tests)
        self.state = RecalibrationState()
        self.results: list[RecalibrationResult] = []
        self.waiting_need = 0
        self._env_start: float | None = None  # where the served model's environment began
        self._labelled = 0  # labels on the served model's predictions since the swap
        self._refine_mark = 0  # ... counted at the last refinement
        self._refunds = 0  # rule-fired recalibrations that did no work (see drain_refunds)
        self.refresh = LabelFreeRefresh(adapted_with_labels(rt.registry, rt.serving.version))

    # -- requests ----------------------------------------------------------------------

    def request(
        self, trigger: Trigger, mode: Mode = "supervised", reason: str = "", key: str | None = None
    ) -> dict[str, Any]:
        """Schedule one recalibration (idempotent while one is pending). A refused
        request (duplicate, over a limit, one already pending) releases its ``key``."""
        rt, st = self._rt, self.state
        if not st.claim(key):
            return {"scheduled": False, "reason": "duplicate alert"}
        try:
            if trigger == "rule" and mode == "supervised" and st.waiting is not None:
                return {"scheduled": False, "reason": "waiting for labelled samples"}
            if trigger != "rule":  # rules were checked by the engine, with these signals
                blocked = rt.engine.recalibration_blocked(rt.signals())
                if blocked:
                    rt.metrics.record_recalibration(trigger, "skipped")
                    rt.state.events.append(
                        "recalibration", trigger=trigger, outcome="skipped", reason=blocked
                    )
                    return {"scheduled": False, "reason": blocked}
            # A supervised request waiting for labels waits again after a label-free one.
            req = Request(trigger, mode, reason, key, st.waiting if mode == "label_free" else None)
            if not st.enqueue(req):
                return {"scheduled": False, "reason": "a recalibration is already pending"}
        finally:
            st.release(key)  # enqueue() holds it again for the request it took
        return self._hand_on(req)

    def _hand_on(self, req: Request) -> dict[str, Any]:
        """Run a queued request inline, or hand it to the scheduler's worker."""
        if self._submit is None:
            res = self._job(req)
            return {"scheduled": True, "outcome": res.outcome, "reason": res.reason}
        if not self._submit(lambda: self._job(req)):
            self.state.unqueue()
            return {"scheduled": False, "reason": "a recalibration is already pending"}
        return {"scheduled": True, "reason": ""}

    def retry_waiting(self) -> None:
        """At a tick: a recalibration waiting for labels runs once they have arrived."""
        waiting = self.state.waiting
        if waiting is None:
            return
        self.waiting_need = self._split(self._labels(count=False)).need
        if self.waiting_need == 0:
            # The limits hold for the real work, whoever asked: a request that waited
            # stays waiting while the hourly limit or the day's budget is reached.
            if self._rt.engine.recalibration_blocked(self._rt.signals()):
                return
            req = Request(waiting.trigger, "supervised", f"labels arrived; {waiting.reason}")
            if self.state.enqueue(req):
                self._hand_on(req)

    def maybe_refresh(self) -> None:
        """At a tick: a label-free refresh when one is due (:mod:`~regulator.service.refresh`;
        policy ``recalibration.label_free_refresh_factor``)."""
        rt = self._rt
        cfg = rt.policy.recalibration
        if cfg.label_free_refresh_factor is None or self.state.pending():
            return
        factor, cap = cfg.label_free_refresh_factor, cfg.label_free_refresh_max_samples
        n = self.refresh.take(rt.monitors.episodes, rt.n_samples, factor, cap)
        if n is not None:
            self.request("refresh", "label_free", f"{n} samples since the change point")

    def drain_refunds(self) -> int:
        """How many rule-fired recalibrations only waited since the last call: they do
        not count towards ``max_per_hour`` (the engine is refunded)."""
        n, self._refunds = self._refunds, 0
        return n

    def _job(self, req: Request) -> RecalibrationResult:
        self.state.start()
        waiting = False
        try:
            res = self.run(req.trigger, req.mode, req.reason)
            # Labels were short: it skipped, or ran a label-free stopgap meanwhile (which
            # may have failed or been swapped in); the supervised one still waits for them.
            # A job refused by a limit with enough labels does not wait: it is over.
            waiting = req.mode == "supervised" and (
                res.mode == "label_free" or (res.outcome == "skipped" and self.waiting_need > 0)
            )
            return res
        finally:
            self.state.finish(waiting)

    # -- the data of the current environment ---------------------------------------------

    def maybe_refine(self, new_labels: int) -> None:
        """``new_labels`` arrived on the served model's own predictions. When
        ``refine_error_above`` is set, the model was swapped in for this environment, its
        error on them is above that and ``k_shot`` new labels per class came since the
        last refinement, a supervised recalibration adapts on every label of this
        environment (event-driven: nothing runs while the error stays below)."""
        rt = self._rt
        cfg = rt.policy.recalibration
        self._labelled += new_labels
        labelled = self._labelled
        if cfg.refine_error_above is None or self._env_start is None:
            return
        n_cls = rt.serving.check.n_classes if rt.serving.check.classifies else 1
        if labelled - self._refine_mark < cfg.k_shot * n_cls or self.state.pending():
            return
        snap = rt.snapshot()
        error = (1.0 - snap.accuracy) if snap.accuracy is not None else snap.mae
        if error is None or error <= cfg.refine_error_above:
            return
        self._refine_mark = labelled
        why = f"error {error:.3f} > {cfg.refine_error_above} on {labelled} labels since the swap"
        self.request("labels", "supervised", why)

    def shift_time(self) -> float:
        """Where the current environment began: at a detection, the drift detector's
        change-point estimate (less a short lookback); after a swap in it, the same
        start (so refinements use every label of the environment); else the last swap."""
        rt = self._rt
        since = rt.serving.swapped_at
        ep = rt.monitors.episodes
        if ep.since_t_s is None and self._env_start is not None:
            return self._env_start
        if ep.since_t_s is not None:
            t_change = None
            if ep.change_sample is not None:
                t_change = rt.intake.time_of_sample(ep.change_sample)
            start = ep.since_t_s if t_change is None else min(t_change, ep.since_t_s)
            since = max(since, start - LABEL_LOOKBACK_S)
        return since

    def _labels(self, count: bool) -> list[Label]:
        rt = self._rt
        with rt.turns.yielding():  # the intake checks a copy of the stored labels, unlocked
            return rt.intake.labels_since(self.shift_time(), rt.serving.check, count)

    def _split(self, labels: list[Label]) -> Split:
        rt = self._rt
        cfg = rt.policy.recalibration
        h = 0 if cfg.acceptance == "cross_validation" else cfg.holdout_per_class
        return split_support(
            labels, rt.serving.check.classifies, cfg.k_shot, h, cfg.max_shots_per_class
        )

    def _unlabelled(self, trigger: str) -> np.ndarray:
        rt = self._rt
        ep = rt.monitors.episodes
        change = self.refresh.change_sample
        if trigger == "refresh" and change is not None:  # the environment's, across swaps
            cap = rt.policy.recalibration.label_free_refresh_max_samples
            return rt.intake.unlabelled(change, -math.inf, cap)
        first = ep.change_sample if ep.active and ep.change_sample is not None else 0
        since_t = rt.serving.swapped_at
        return rt.intake.unlabelled(first, since_t, RECENT_FOR_RENORMALISATION)

    # -- the job -------------------------------------------------------------------------

    def run(self, trigger: str, mode: Mode, reason: str = "") -> RecalibrationResult:
        """Clone, adapt, check on held-out labels, then swap atomically or discard. Its
        work in this process is one step taking turns with serving, yielding between
        phases, with the worker's run and every fsync outside it (regulator.turns)."""
        with self._rt.turns.step():
            return self._run(trigger, mode, reason)

    def _run(self, trigger: str, mode: Mode, reason: str) -> RecalibrationResult:
        rt = self._rt
        pause = rt.turns.pause
        t_start = rt.clock()
        wall0 = time.perf_counter()
        served = rt.serving
        env_start = self.shift_time()
        labels = self._labels(count=True)
        pause()
        split = self._split(labels)
        self.waiting_need = split.need
        if split.need > 0 and mode == "supervised":
            # The label-free stopgap is only taken when some held-out labels can check
            # it: without labels a re-normalised model can look in-distribution and
            # still be wrong (measured on the gas-drift replay).
            if not rt.policy.recalibration.allow_label_free_fallback or not split.holdout:
                why = f"waiting for {split.need} more labelled samples"
                if trigger == "rule":
                    self._refunds += 1
                return self._finish(
                    RecalibrationResult(trigger, mode, "skipped", why, t_start), wall0
                )
            mode = "label_free"
        pause()
        recent = self._unlabelled(trigger)
        pause()
        if mode == "label_free" and trigger != "refresh":
            self.refresh.attempted(rt.monitors.episodes, len(recent))
        with rt.turns.yielding():  # the limits' own locks only (their files fsync)
            refused = self._refusal(mode, len(recent), t_start)
        if refused is not None:
            if trigger == "rule":
                self._refunds += 1
            return self._finish(
                RecalibrationResult(trigger, mode, "skipped", refused, t_start), wall0
            )

        def stack(labels: list[Label]) -> tuple[np.ndarray | None, np.ndarray | None]:
            if not labels:
                return None, None
            x = np.stack([np.asarray(lab.x, np.float32) for lab in labels])
            return x, np.asarray([lab.y for lab in labels])

        support = split.support if mode == "supervised" else []
        # A label-free candidate adapts on no label: every label of the environment checks it.
        checked = split.holdout if mode == "supervised" else labels
        sx, sy = stack(support)
        hx, hy = stack(checked)
        pause()
        try:
            tmp = Path(tempfile.mkdtemp(prefix="candidate-", dir=rt.state.root))
        except OSError as err:
            why = f"state directory: {err}"
            return self._finish(RecalibrationResult(trigger, mode, "failed", why, t_start), wall0)
        try:
            req = CandidateRequest(
                model_dir=str(rt.registry.path(served.version)),
                profile=rt.policy.device.profile,
                seed=rt.policy.device.seed,
                mode=mode,
                support_x=sx,
                support_y=sy,
                holdout_x=hx,
                holdout_y=hy,
                recent_x=recent,
                margin=rt.policy.recalibration.acceptance_margin,
                out_dir=str(tmp),
                acceptance=rt.policy.recalibration.acceptance,
            )
            timeout = rt.policy.recalibration.timeout_s
            try:
                res = rt.turns.outside(
                    lambda: rt.executor.run(build_candidate, req, timeout_s=timeout)
                )
            except (RegulatorError, ValueError, RuntimeError, OSError) as err:
                if isinstance(err, RegulatorError):  # a refusal or a timeout: one line
                    log.warning("recalibration failed: %s", err)
                else:  # anything else is a bug: its traceback
                    log.exception("recalibration failed")
                return self._finish(
                    RecalibrationResult(trigger, mode, "failed", str(err), t_start), wall0
                )
            with rt.turns.yielding():  # the budget's own lock only
                rt.budget.add(float(res.cost.get("learning_energy_j", 0.0)), rt.wall_clock())
            if not res.accepted or res.folder is None:
                return self._finish(
                    RecalibrationResult(
                        trigger,
                        mode,
                        "rejected",
                        res.reason,
                        t_start,
                        evaluation=res.evaluation,
                        cost=res.cost,
                    ),
                    wall0,
                )
            try:  # a full disk or a refused reserve: the candidate is discarded
                with rt.turns.yielding():  # the registry's and the slot's own locks only
                    version, new = adopt(rt, res, served.version, trigger, mode, reason,
                                               support, checked, len(recent))  # fmt: skip
            except (RegulatorError, OSError) as err:
                log.error("recalibration: cannot store the candidate: %s", err)
                why = f"cannot store the candidate: {err}"
                return self._finish(
                    RecalibrationResult(trigger, mode, "failed", why, t_start), wall0
                )
        finally:  # unlinking, no lock held: without the turn
            rt.turns.outside(shutil.rmtree, tmp, True)
        self._env_start = env_start
        self._labelled = self._refine_mark = 0
        self.refresh.served(rt.monitors.episodes, labelled=mode == "supervised")
        rt.swap_in(new)
        self.waiting_need = 0
        return self._finish(
            RecalibrationResult(
                trigger,
                mode,
                "accepted",
                res.reason,
                t_start,
                version=version,
                evaluation=res.evaluation,
                cost=res.cost,
            ),
            wall0,
        )

    def _refusal(self, mode: Mode, n_recent: int, t_s: float) -> str | None:
        """Why this job may not start its work, or None once it is counted against
        ``max_per_hour`` (checked and counted in one step, so two starts at one tick
        cannot both pass the limit). Whoever asked, these limits hold for real work."""
        rt = self._rt
        cfg = rt.policy.recalibration
        if mode == "label_free" and n_recent < MIN_RECENT:
            return f"label-free recalibration needs >= {MIN_RECENT} recent samples, have {n_recent}"
        wall = rt.wall_clock()
        budget = cfg.learning_energy_budget_j_per_day
        spent = rt.budget.today_j(wall)
        if budget is not None and spent >= budget:
            return f"learning energy today {spent:.4g} J >= budget {budget:.4g} J per day"
        if not rt.hourly.take(t_s, wall, cfg.max_per_hour):
            n = rt.hourly.last_hour(t_s)
            return f"{n} recalibrations in the last hour (max_per_hour {cfg.max_per_hour})"
        return None

    def _finish(self, res: RecalibrationResult, wall0: float) -> RecalibrationResult:
        rt = self._rt
        res.seconds = time.perf_counter() - wall0
        self.results.append(res)
        rt.bound(self.results)
        rt.metrics.record_recalibration(res.trigger, res.outcome, res.seconds)
        learning_j = float(res.cost.get("learning_energy_j", 0.0))
        if learning_j > 0:
            rt.metrics.energy.labels(phase="learning").inc(learning_j)
            rt.monitors.report_energy(0.0, learning_j, res.t_s, 0)
        # the event log appends and fsyncs under a lock serving takes: without the turn
        rt.turns.outside(lambda: rt.state.events.append("recalibration", **res.to_dict()))
        log.info("recalibration %s: %s (%s)", res.outcome, res.reason, res.trigger)
        rt.turns.pause()
        with rt.turns.yielding():  # an atomic write outside every serving lock
            rt.save_monitors()
        return res
