"""The runtime: one device's service as one step — serve a batch, take labels, tick.

It composes the pieces, each the one home of its job: the serving slot (load, swap,
roll back, power mode, chip ageing), the input check, the monitor set and its drift
episodes, the label intake, the recalibration state machine and job, the budget, the
action table shared by rules, schedules, alerts and HTTP, and the scrape-time gauges.
The same object runs under ``regulator run`` (monotonic and wall clocks, a scheduler,
a worker process) and ``regulator replay`` (simulated time, jobs inline), both driven
by :class:`~regulator.service.loop.ServiceLoop`.

Threads: the main loop calls :meth:`Runtime.process_batch` and :meth:`Runtime.tick`;
recalibrations run on the scheduler's workers and publish a new model through the
slot by one reference assignment, so inference never waits for a recalibration.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from regulator.errors import REJECT_REASONS, InputError, RegulatorError, RejectReason
from regulator.policy.engine import Decision, RuleEngine, Signals
from regulator.policy.model import RECALIBRATION_ACTIONS, Policy
from regulator.registry import Registry
from regulator.service.actions import TRIGGERS, Trigger
from regulator.service.budget import HourlyCount, LearningBudget
from regulator.service.collector import ScrapeCollector, bind_storage_gauges
from regulator.service.control import Controls
from regulator.service.episode import QUIET_SAMPLES
from regulator.service.executor import Executor, InlineExecutor
from regulator.service.inference import Inference
from regulator.service.intake import Intake
from regulator.service.jobs import Mode, RecalibrationResult
from regulator.service.metrics import Metrics
from regulator.service.monitors import MonitorSet, Snapshot, ood_threshold
from regulator.service.paths import repo_root, resolve_path
from regulator.service.recalibration import Recalibrator
from regulator.service.reload import ReloadOutcome, restart_only_changes
from regulator.service.rows import ServedRows
from regulator.service.scheduler import Scheduler
from regulator.service.schedules import IntervalSchedules, install_cron
from regulator.service.slot import Served, ServingSlot, prime_detector
from regulator.service.state import StateDir
from regulator.service.views import models_view, snapshot_fields, status_view
from regulator.turns import Turns

__all__ = [
    "QUIET_SAMPLES",
    "RECAL_JOB",
    "RecalibrationResult",
    "ReloadOutcome",
    "Runtime",
    "repo_root",
    "resolve_path",
]

log = logging.getLogger(__name__)

RECAL_JOB = "recalibration"
SNAPSHOT_EVERY_S = 10.0  # monitor snapshots in the event log, for `regulator report`
HISTORY_KEPT = 1000  # recalibrations and detections a daemon keeps in memory


class Runtime:
    """The serving, monitoring and recalibration logic of one device.

    ``clock`` gives seconds for durations (monotonic in the daemon, simulated in
    replay); ``wall_clock`` seconds since the epoch, for the UTC day of the learning
    budget (the simulated clock in replay). With ``inline_jobs`` (or no ``scheduler``)
    recalibrations run synchronously; otherwise on ``scheduler``'s workers. Candidates
    are built by ``executor`` (inline unless given)."""

    def __init__(
        self,
        policy: Policy,
        state_dir: Path,
        clock: Callable[[], float] = time.monotonic,
        inline_jobs: bool = False,
        metrics_registry: CollectorRegistry | None = None,
        lock_state: bool = True,
        wall_clock: Callable[[], float] = time.time,
        scheduler: Scheduler | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.wall_clock = wall_clock
        self.inline_jobs = inline_jobs
        self.scheduler = scheduler
        self.executor: Executor = executor or InlineExecutor()
        store = policy.storage
        self.state = StateDir(
            state_dir,
            lock=lock_state,
            max_labels=store.max_labels,
            reserve_bytes=store.reserve_bytes,
            event_log_max_bytes=store.event_log_max_bytes,
            event_log_files=store.event_log_files,
        )
        self.registry = Registry(self.state.registry_dir, guard=self.state.guard)
        self.metrics_registry = metrics_registry or CollectorRegistry()
        self.metrics = Metrics(self.metrics_registry, policy.device.id)
        bind_storage_gauges(self.metrics, self.state.guard, lambda: bool(self.registry.problems))
        self.metrics.init_recalibration_series(TRIGGERS)
        self.engine = RuleEngine(policy)
        self.budget = LearningBudget(self.state.monitors)
        self.hourly = HourlyCount(self.state.monitors, clock(), wall_clock())
        self._last_tick_mono = time.monotonic()  # liveness: immune to wall-clock jumps
        self._last_snapshot_t = -math.inf
        self.slot = ServingSlot(
            policy, self.registry, resolve_path(policy.model.prior), clock(), self.metrics.set_model
        )
        self.metrics.quarantined.inc(len(self.registry.problems))
        self.prune()
        self.monitors = MonitorSet(policy.monitors, self.serving.bundle.kind)
        self.intake = Intake(
            self.state.labels, lambda r: self.metrics.labels_skipped.labels(reason=r).inc()
        )
        # Serving and a recalibration's in-process steps take turns (regulator.turns).
        self.turns = Turns()
        self.inference = Inference(
            self.slot,
            self.monitors,
            self.intake,
            self.metrics,
            self.state.events,
            self.bound,
            self.turns,
        )
        submit = None
        if scheduler is not None and not inline_jobs:
            sched = scheduler
            submit = lambda fn: sched.run_now(RECAL_JOB, fn, group="recalibration")  # noqa: E731
        self.recal = Recalibrator(self, submit)
        self.intervals = IntervalSchedules()
        self.controls = Controls(self)
        self.collector = ScrapeCollector(
            self.metrics,
            self.snapshot,
            lambda: self.slot.chip_age_s,
            lambda: self.recal.waiting_need,
            lambda: self.serving.check.classifies,
        )
        self._restore_monitors()
        self.metrics.init_reject_series(REJECT_REASONS)
        self.metrics.ood_threshold.set(ood_threshold(self.policy))
        self._install_schedules()
        self.state.events.append("startup", version=self.serving.version, device=policy.device.id)

    # -- reading ---------------------------------------------------------------------------

    @property
    def serving(self) -> Served:
        return self.slot.served

    @property
    def results(self) -> list[RecalibrationResult]:
        return self.recal.results

    @property
    def energy(self) -> Any:
        return self.monitors.energy

    @property
    def n_samples(self) -> int:
        return self.inference.n_samples

    @property
    def detections(self) -> list[dict[str, Any]]:
        return self.inference.detections

    @property
    def explanation(self) -> dict[str, Any] | None:
        return self.inference.explanation

    @property
    def low_power(self) -> bool:
        return self.slot.low_power

    @property
    def healthy_since_tick_s(self) -> float:
        """Seconds since the main loop last ticked, on the monotonic clock (a jump of
        the wall clock must not make the daemon look dead, or alive)."""
        return time.monotonic() - self._last_tick_mono

    def snapshot(self) -> Snapshot:
        return self.monitors.snapshot(self.serving)

    def bound(self, history: list[Any]) -> None:
        """Keep a daemon's in-memory history bounded over months (the event log has it
        all); a replay keeps everything for its report."""
        if not self.inline_jobs and len(history) > 2 * HISTORY_KEPT:
            del history[:-HISTORY_KEPT]

    # -- storage ---------------------------------------------------------------------------

    def prune(self) -> None:
        """Registry retention (policy ``storage``): after start, before each swap (off
        the serving thread) and after a reload."""
        cfg = self.policy.storage
        try:
            self.registry.prune(cfg.keep_versions, cfg.keep_served_versions)
        except OSError as err:
            log.warning("registry: pruning failed: %s", err)

    def _restore_monitors(self) -> None:
        saved = self.state.monitors.load("monitors", default=None)
        if not saved or saved.get("version") != self.serving.version:
            return
        try:
            self.monitors.accuracy.load_state_dict(saved["accuracy"])
            self.engine.load_state_dict(saved["engine"], t_s=self.clock())
        except (KeyError, ValueError, RegulatorError) as err:
            log.warning("monitor state not restored: %s", err)

    def save_monitors(self) -> None:
        """Persist monitor and engine state (atomic write)."""
        self.state.monitors.save(
            "monitors",
            {
                "version": self.serving.version,
                **self.monitors.state_dict(),
                "engine": self.engine.state_dict(),
            },
        )

    def prime_detector_thresholds(self) -> None:
        """Cache the detector thresholds a swap would compute (see :func:`prime_detector`)."""
        prime_detector(self.policy.monitors)

    # -- the inference path -------------------------------------------------------------

    def process(self, sample_id: str, x: np.ndarray, t: float | None = None) -> dict[str, Any]:
        """Serve one sample; InputError (counted) for one that cannot be served."""
        out = self.process_batch([(sample_id, x)], t)[0]
        if isinstance(out, InputError):
            raise out
        return out

    def process_batch(
        self,
        items: list[tuple[str, Any]],
        t: float | None = None,
        checked: bool = False,
        defer: bool = False,
    ) -> ServedRows:
        """Serve samples together (one chip forward): one result per item, in order, or
        the InputError that rejected it (counted, the others still served). ``defer``:
        the caller has more to serve and calls :meth:`flush` before it hands the
        results on (their ``ood_p_value`` is filled in then)."""
        return self.inference.serve(items, self.clock() if t is None else t, checked, defer)

    def process_array(
        self, ids: list[str], x: np.ndarray, t: float | None = None, defer: bool = False
    ) -> ServedRows:
        """Serve samples given as one array ``[n, C, L]`` (see :meth:`Inference.serve_array`)."""
        return self.inference.serve_array(ids, x, self.clock() if t is None else t, defer)

    def flush(self) -> None:
        """The monitor updates that serving deferred (see :meth:`Inference.flush`)."""
        self.inference.flush()

    def explain(self, sample: int) -> None:
        """Explain a detection at ``sample`` (see :meth:`Inference.explain`)."""
        self.inference.explain(sample)

    # -- labels ------------------------------------------------------------------------------

    def add_labels(
        self, items: Iterable[tuple[str, Any, np.ndarray | None]], t: float | None = None
    ) -> dict[str, Any]:
        """Accept labels (by sample id, or with their input ``x``); persisted first.

        ``x`` must fit the served model's input and ``y`` be one of its classes (or a
        finite target). Returns ``{"accepted": n, "rejected": [{"index", "reason",
        "detail"}]}``; StorageFullError if the state disk cannot store them."""
        t_now = self.clock() if t is None else t
        out = self.intake.add(items, self.serving.check, t_now, self._count_reject)
        if out.accepted:
            self.metrics.labels_received.inc(len(out.accepted))
        if out.matched:
            ids = [sid for sid, _ in out.matched]
            self.monitors.label(ids, np.asarray([y for _, y in out.matched]))
            self.recal.maybe_refine(len(out.matched))
        return {"accepted": len(out.accepted), "rejected": out.rejected}

    def _count_reject(self, reason: RejectReason) -> None:
        self.metrics.samples_rejected.labels(reason=reason).inc()

    # -- decisions ---------------------------------------------------------------------------

    def signals(self, t: float | None = None) -> Signals:
        """What the monitors say now, for the rule engine."""
        t_s = self.clock() if t is None else t
        snap = self.snapshot()
        return Signals(
            t_s=t_s,
            drift_detected=snap.drift_detected,
            ood_pvalue=snap.ood_mean_p_value,
            accuracy=snap.accuracy if self.serving.check.classifies else None,
            n_labels=snap.labels_in_window,
            power_w=snap.power_w,
            silent_layers=snap.silent_layers,
            saturated_layers=snap.saturated_layers,
            learning_energy_j_today=self.budget.today_j(self.wall_clock()),
            recalibrations_last_hour=self.hourly.last_hour(t_s),
        )

    def tick(self, t: float | None = None) -> list[Decision]:
        """Evaluate the rules once and act on their decisions."""
        t_now = self.clock() if t is None else t
        self.inference.flush()  # the rules read every sample served so far
        self._last_tick_mono = time.monotonic()
        self.metrics.last_tick.set(time.time())  # the gauge is a timestamp
        self.collector.ensure_layers(self.monitors.density.layer_names)
        self.recal.retry_waiting()
        if t_now - self._last_snapshot_t >= SNAPSHOT_EVERY_S:
            self._last_snapshot_t = t_now
            self.state.events.append("snapshot", **snapshot_fields(self, t_now))
        for action in self.intervals.due(t_now):
            self.controls.act(action, "schedule", "schedule")
        for _ in range(self.recal.drain_refunds()):  # only real work counts
            self.engine.refund_recalibration()
        decisions = self.engine.evaluate(self.signals(t_now))
        for d in decisions:
            self.state.events.append(
                "decision", rule=d.rule, action=d.action, reason=d.reason, suppressed=d.suppressed
            )
            if d.suppressed:
                self.metrics.record_recalibration("rule", "skipped")
                continue
            out = self.controls.act(d.action, "rule", d.reason)
            if d.action in RECALIBRATION_ACTIONS and out.get("scheduled") is False:
                self.engine.refund_recalibration()
        self.recal.maybe_refresh()  # after the rules: a labelled recalibration goes first
        return decisions

    # -- actions -------------------------------------------------------------------------

    def request_recalibration(
        self, trigger: Trigger, mode: Mode = "supervised", reason: str = "", key: str | None = None
    ) -> dict[str, Any]:
        """Schedule one recalibration (idempotent while one is pending)."""
        return self.recal.request(trigger, mode, reason, key)

    def recalibration_pending(self, key: str | None = None) -> bool:
        return self.recal.state.pending(key)

    def recalibrate(self, trigger: Trigger, mode: Mode, reason: str = "") -> RecalibrationResult:
        """Run one recalibration now, in this thread (benchmarks, tests)."""
        return self.recal.run(trigger, mode, reason)

    def swap_in(self, new: Served) -> None:
        """Serve ``new`` (already stored, promoted and loaded): the monitors start
        afresh. Touches no file (the serving thread's part of a swap)."""
        self.slot.swap(new)
        self.monitors.swapped()

    # -- schedules and reload --------------------------------------------------------------

    def _install_schedules(self) -> None:
        self.intervals.install(self.policy, self.clock())
        install_cron(self.scheduler, self.policy, self.controls.table)

    def schedule_jobs(self) -> list[dict[str, Any]]:
        """Every schedule with its next run (seconds since the epoch): interval ones
        (run by the loop's tick), then the scheduler's (cron, on-demand)."""
        cron = self.scheduler.jobs() if self.scheduler is not None else []
        return self.intervals.jobs(self.clock(), time.time()) + cron

    def reload(self, policy: Policy) -> ReloadOutcome:
        """Apply a new, validated policy whole, or refuse it whole (counted) when it
        changes what only a restart can (:mod:`regulator.service.reload`)."""
        fixed = restart_only_changes(self.policy, policy)
        if fixed:
            return self.reload_failed(f"needs a restart to change: {', '.join(fixed)}")
        self.engine = self.engine.rebuilt(policy)
        self.policy = policy
        self.slot.apply(policy)
        self.monitors.apply(policy.monitors)
        self._install_schedules()
        self.metrics.ood_threshold.set(ood_threshold(self.policy))
        self.prune()
        self.state.events.append("reload", ok=True)
        return ReloadOutcome(True)

    def reload_failed(self, reason: str) -> ReloadOutcome:
        """A reload refused (bad file, or a restart-only change): counted, logged."""
        self.metrics.policy_reload_failures.inc()
        self.state.events.append("reload", ok=False, reason=reason)
        log.error("policy reload refused, keeping the old policy: %s", reason)
        return ReloadOutcome(False, reason)

    # -- views -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return status_view(self)

    def models(self) -> list[dict[str, Any]]:
        return models_view(self)

    def close(self) -> None:
        self.save_monitors()
        self.state.events.append("shutdown", version=self.serving.version)
        self.state.close()
