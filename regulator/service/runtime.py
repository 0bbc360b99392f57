"""The daemon's runtime: serve the model, watch it, decide, recalibrate, swap.

One :class:`Runtime` is used both by ``regulator run`` (wall clock, a background
scheduler, the HTTP API) and by ``regulator replay`` (simulated time, jobs run inline),
so that a replay exercises exactly the logic that the daemon runs.

Threads: the main loop calls :meth:`Runtime.process` for each sample and
:meth:`Runtime.tick` to evaluate the rules; recalibrations run on the scheduler's
workers and publish a new :class:`_Serving` (model + OOD monitor) by one reference
assignment, so inference never waits for a recalibration.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from regulator.errors import (
    REJECT_REASONS,
    ConfigError,
    InputError,
    RegistryError,
    RegulatorError,
    RejectReason,
)
from regulator.meta.model import ChipModel, ModelBundle
from regulator.monitor.accuracy import AccuracyMonitor
from regulator.monitor.density import SpikeDensityMonitor
from regulator.monitor.energy import EnergyMonitor
from regulator.monitor.stream import OODMonitor
from regulator.policy.engine import Decision, RuleEngine, Signals
from regulator.policy.model import RECALIBRATION_ACTIONS, Policy
from regulator.registry import Registry
from regulator.service.candidate import CandidateRequest, CandidateRunner, run_inline
from regulator.service.drift import DriftWindow
from regulator.service.metrics import Metrics
from regulator.service.state import Label, StateDir

log = logging.getLogger(__name__)

RECAL_JOB = "recalibration"
RECENT_SAMPLES = 4096  # unlabelled inputs kept for label matching and label-free refits
TRIGGERS = ("rule", "schedule", "alert", "http")
QUIET_SAMPLES = 200  # samples without an alarm that end a drift episode
SNAPSHOT_EVERY_S = 10.0  # monitor snapshots in the event log, for `regulator report`
LABEL_LOOKBACK_S = 2.0  # labels this long before a drift alarm count as post-shift


HISTORY_KEPT = 1000  # recalibrations and detections a daemon keeps in memory


def _bound(history: list[Any], keep_all: bool) -> None:
    """Keep a daemon's in-memory history bounded over months (the event log has it
    all); a replay keeps everything for its report."""
    if not keep_all and len(history) > 2 * HISTORY_KEPT:
        del history[:-HISTORY_KEPT]


def repo_root() -> Path:
    """The folder holding ``regulator/`` and ``models/`` (a source checkout)."""
    return Path(__file__).resolve().parents[2]


def resolve_path(p: str | Path) -> Path:
    """A relative path: from the working directory if it exists there, else from the
    source checkout, else from ``<prefix>/share/regulator`` (where an installed copy,
    such as the container image, keeps the shipped ``models/``)."""
    path = Path(p)
    if path.is_absolute() or path.exists():
        return path
    for base in (repo_root(), Path(sys.prefix) / "share" / "regulator"):
        if (base / path).exists():
            return base / path
    return path


@dataclass
class _Serving:
    """What serves right now; replaced whole on a swap."""

    version: str
    bundle: ModelBundle
    model: ChipModel
    ood: OODMonitor
    swapped_at: float


@dataclass
class RecalibrationResult:
    """Outcome of one recalibration job, as logged and reported."""

    trigger: str
    mode: str
    outcome: str  # accepted | rejected | failed | skipped
    reason: str
    t_s: float
    seconds: float = 0.0
    version: str | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Runtime:
    """The serving, monitoring and recalibration logic of one device.

    ``clock`` gives seconds (monotonic in the daemon, simulated in replay);
    ``inline_jobs`` runs recalibrations synchronously (replay) instead of on the
    scheduler (``submit`` callable, set by the daemon).
    """

    def __init__(
        self,
        policy: Policy,
        state_dir: Path,
        clock: Callable[[], float] = time.monotonic,
        inline_jobs: bool = False,
        metrics_registry: CollectorRegistry | None = None,
        lock_state: bool = True,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.inline_jobs = inline_jobs
        self.submit: Callable[[str, Callable[[], Any]], bool] | None = None
        # Where candidates are built: inline here; the daemon uses a worker process.
        self.candidate_runner: CandidateRunner = run_inline
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
        self._watch_storage()
        self.metrics.init_recalibration_series(TRIGGERS)
        self.engine = RuleEngine(policy)
        self._lock = threading.RLock()
        self._energy_lock = threading.Lock()
        self._energy_t = -math.inf
        self._recent: OrderedDict[str, tuple[np.ndarray, float]] = OrderedDict()
        self._recent_unlabelled: deque[tuple[np.ndarray, float]] = deque(maxlen=512)
        self._recal_times: deque[float] = deque()
        self._learning_j_day: tuple[int, float] = (0, 0.0)
        self._alert_keys: set[str] = set()
        self._last_tick_wall = time.time()
        self._pending_recal: str | None = None
        self.results: list[RecalibrationResult] = []
        self.detections: list[dict[str, Any]] = []
        self.drift_window = DriftWindow()  # recent inputs, explained at a detection
        self.explanation: dict[str, Any] | None = None  # of the latest detection
        self.low_power = False
        self._alarm_on = False
        self._drift_since: float | None = None  # start of the current drift episode
        self._last_alarm_sample = -(10**9)
        self._waiting: tuple[str, str] | None = None  # (trigger, reason) awaiting labels
        self._recal_running = False
        self._refunds = 0  # rule-fired recalibrations that did no work (see tick)
        self._last_snapshot_t = -math.inf
        self.started = False
        self.n_samples = 0
        prior = resolve_path(policy.model.prior)
        # Damaged versions are quarantined and the newest sound one served (issue 12):
        # a bad state directory degrades the service, it does not stop it.
        self._serving = self.registry.open_serving(
            prior, lambda v: self._load_version(v, self.clock())
        )
        version = self._serving.version
        self.metrics.quarantined.inc(len(self.registry.problems))
        self._prune()
        self.energy = EnergyMonitor(window_s=policy.monitors.power_window_s)
        self.density = SpikeDensityMonitor(
            window=policy.monitors.spike_density_window_samples,
            silent_below=policy.monitors.silent_threshold,
            saturated_above=policy.monitors.saturated_threshold,
        )
        # Predictions wait for their labels only as long as their inputs are kept.
        self.accuracy = AccuracyMonitor(
            window=policy.monitors.accuracy_window_labels,
            task=self._serving.bundle.kind,
            max_pending=RECENT_SAMPLES,
        )
        self._restore_monitors()
        for reason in REJECT_REASONS:  # series exist from the start, so rates read 0
            self.metrics.samples_rejected.labels(reason=reason)
            self.metrics.requests_rejected.labels(reason=reason)
        self.metrics.calibration_samples_needed.set(0)
        self.metrics.drift_detected.set(0)
        self.metrics.ood_threshold.set(self._ood_threshold())
        self.state.events.append("startup", version=version, device=policy.device.id)

    # -- storage ------------------------------------------------------------------------

    def _watch_storage(self) -> None:
        """Disk gauges read at scrape time; refused writes counted by what they were."""
        guard = self.state.guard
        m = self.metrics
        guard.on_refuse = lambda what: m.storage_refused.labels(what=what).inc()
        for what in ("label", "event", "version", "monitors"):
            m.storage_refused.labels(what=what)
        m.state_bytes.set_function(lambda: float(guard.state_bytes()))
        m.disk_free_bytes.set_function(lambda: float(guard.free_bytes()))
        m.degraded.set_function(lambda: float(bool(self.registry.problems) or guard.full))

    def _prune(self) -> None:
        """Registry retention (policy ``storage``), after start and after each swap."""
        cfg = self.policy.storage
        try:
            self.registry.prune(cfg.keep_versions, cfg.keep_served_versions)
        except OSError as err:
            log.warning("registry: pruning failed: %s", err)

    # -- model loading ------------------------------------------------------------------

    def _load_version(self, version: str, t: float) -> _Serving:
        bundle = ModelBundle.load(self.registry.path(version))
        model = ChipModel(bundle, seed=self.policy.device.seed)
        if self.policy.device.profile != bundle.profile.name:
            from regulator.chip.profiles import load_profile

            profile = load_profile(self.policy.device.profile)
            bundle.profile = profile
            model = ChipModel(bundle, seed=self.policy.device.seed)
        if self.policy.model.n_steps is not None:
            model.n_steps = self.policy.model.n_steps
        ood = self._make_ood(bundle.calibration.get("ood"))
        info = self.registry.info(version)
        self.metrics.set_model(version, str(bundle.task.get("family", "unknown")))
        log.info("serving model %s (%s)", version, info.trigger)
        return _Serving(version, bundle, model, ood, t)

    def _make_ood(self, calib: dict[str, Any] | None) -> OODMonitor:
        if not calib:
            raise ConfigError("the model folder has no OOD calibration statistics")
        m = self.policy.monitors
        return OODMonitor(
            calib,
            detector=m.detector,
            detector_config={
                "mean_samples_between_false_alarms": m.mean_samples_between_false_alarms
            },
        )

    def prime_detector_thresholds(self) -> None:
        """Compute (and cache) the drift detector's thresholds for every calibration
        size a recalibration can produce, so a swap does not spend ~0.1 s of CPU, and
        the GIL, on it while serving."""
        from regulator.meta.train import CALIBRATION_SIZES
        from regulator.monitor.detect import make_detector

        m = self.policy.monitors
        for n_cal in CALIBRATION_SIZES:
            make_detector(
                m.detector,
                mean_samples_between_false_alarms=m.mean_samples_between_false_alarms,
                n_calibration=n_cal,
            )

    def _ood_threshold(self) -> float:
        """The OOD p-value below which a sample is called out-of-distribution."""
        for rule in self.policy.rules:
            thr = getattr(rule.condition, "threshold", None)
            if rule.condition.signal == "ood_pvalue_below" and thr is not None:
                return float(thr)
        return 0.01

    @property
    def serving(self) -> _Serving:
        return self._serving

    # -- monitors persistence -----------------------------------------------------------

    def _restore_monitors(self) -> None:
        saved = self.state.monitors.load("monitors", default=None)
        if not saved or saved.get("version") != self._serving.version:
            return
        try:
            self.accuracy.load_state_dict(saved["accuracy"])
            self.engine.load_state_dict(saved["engine"], t_s=self.clock())
        except (KeyError, ValueError, RegulatorError) as err:
            log.warning("monitor state not restored: %s", err)

    def save_monitors(self) -> None:
        """Persist monitor and engine state (atomic write)."""
        self.state.monitors.save(
            "monitors",
            {
                "version": self._serving.version,
                "accuracy": self.accuracy.state_dict(),
                "engine": self.engine.state_dict(),
            },
        )

    # -- the inference path ---------------------------------------------------------------

    def process(self, sample_id: str, x: np.ndarray, t: float | None = None) -> dict[str, Any]:
        """Serve one sample: predict, update monitors and metrics. Returns the prediction.

        Raises InputError for a sample that cannot be served (counted as rejected).
        """
        out = self.process_batch([(sample_id, x)], t)[0]
        if isinstance(out, InputError):
            raise out
        return out

    def _check_sample(self, x: np.ndarray) -> np.ndarray:
        arr = np.asarray(x, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[:, None]
        task = self._serving.bundle.task
        n_ch, length = task.get("n_channels"), task.get("length")
        if arr.ndim != 2 or (n_ch is not None and arr.shape[0] != int(n_ch)):
            raise InputError(
                f"a sample must be [{n_ch}, L] or [{n_ch}], got {list(arr.shape)}", "bad_shape"
            )
        if length is not None and arr.shape[1] != int(length):
            raise InputError(
                f"a sample must have {length} time points, got {arr.shape[1]}", "bad_shape"
            )
        if not np.isfinite(arr).all():
            raise InputError("sample holds NaN or infinite values", "non_finite")
        return arr

    def _check_batch(self, items: list[tuple[str, np.ndarray]]) -> np.ndarray | None:
        """The batch ``[n, C, L]`` if every sample is well-formed, else None (then each
        is checked on its own, so the good ones are still served)."""
        task = self._serving.bundle.task
        n_ch, length = task.get("n_channels"), task.get("length")
        if n_ch is None or length is None or not items:
            return None
        try:
            batch = np.asarray([x for _, x in items], dtype=np.float32)
        except (ValueError, TypeError):
            return None
        if batch.ndim == 2 and int(length) == 1:
            batch = batch[:, :, None]
        if batch.shape[1:] != (int(n_ch), int(length)) or not np.isfinite(batch).all():
            return None
        return batch

    def process_batch(
        self, items: list[tuple[str, np.ndarray]], t: float | None = None
    ) -> list[dict[str, Any] | InputError]:
        """Serve samples together (one chip forward): one result per item, in order, or
        the InputError that rejected it (counted, the others still served)."""
        t_now = self.clock() if t is None else t
        m = self.metrics
        results: list[dict[str, Any] | InputError] = []
        ids: list[str] = []
        arrs: list[np.ndarray] = []
        slots: list[int] = []
        fast = self._check_batch(items)
        if fast is not None:  # the common case: one check for the whole batch
            ids = [sid for sid, _ in items]
            arrs = list(fast)
            slots = list(range(len(items)))
            results = [{} for _ in items]
            items = []
        for sid, x in items:
            try:
                arrs.append(self._check_sample(x))
            except InputError as err:
                m.samples_rejected.labels(reason=err.reason).inc()
                results.append(err)
                continue
            ids.append(sid)
            slots.append(len(results))
            results.append({})  # filled below
        if not arrs:
            return results
        serving = self._serving
        batch = fast if fast is not None else np.stack(arrs)
        t0 = time.perf_counter()
        pred = serving.model.predict(batch)
        dt = time.perf_counter() - t0
        n = len(arrs)
        n_before = self.n_samples
        self.n_samples += n
        m.samples.inc(n)
        m.inference_seconds.observe(dt)  # one chip forward, whatever its batch size
        tel = pred.telemetry
        m.synaptic_ops.inc(tel.synaptic_ops)
        m.energy.labels(phase="inference").inc(pred.energy_j)
        m.dense_ann_energy.inc(pred.dense_ann_j)
        self._report_energy(pred.energy_j, 0.0, t_now, n)
        self.density.update(tel)
        alarms0 = serving.ood.n_alarms
        serving.ood.update(pred.hidden_counts, pred.outputs)
        self.drift_window.add(batch)
        m.drift_statistic.set(serving.ood.statistic)
        m.drift_threshold.set(serving.ood.detector.threshold)
        p_vals = serving.ood.p_values
        if p_vals:  # shown with its exponential tail: it can fall below 1/(n_cal + 1)
            m.ood_score.set(serving.ood.tail_p_values[-1])
        new_alarms = serving.ood.n_alarms - alarms0
        if new_alarms > 0:
            m.drift_alarms.inc(new_alarms)
            first = tuple(getattr(serving.ood.detector, "alarm_indices", ()))
            pos = (first[0] - (serving.ood.n_seen - n)) if first else n - 1
            sample_no = n_before + 1 + max(0, min(n - 1, pos))
            quiet = sample_no - self._last_alarm_sample > QUIET_SAMPLES
            if self._drift_since is None or quiet:
                # A detection: the first alarm after a swap or after a quiet spell. It
                # (re)starts the drift episode, so labels from here on are "post-shift".
                self._drift_since = t_now
                det: dict[str, Any] = {
                    "t_s": t_now,
                    "sample": sample_no,
                    "version": serving.version,
                }
                m.drift_detections.inc()
                self._explain(sample_no)
                det["explanation"] = self.explanation
                self.detections.append(det)
                _bound(self.detections, keep_all=self.inline_jobs)
                self.state.events.append("detection", **det, statistic=serving.ood.statistic)
            self._last_alarm_sample = self.n_samples
        elif (
            self._drift_since is not None
            and self.n_samples - self._last_alarm_sample > 5 * QUIET_SAMPLES
        ):
            # Long quiet: the environment came back to what the model knows.
            self._drift_since = None
            self.state.events.append("drift_cleared", sample=self.n_samples)
        self._alarm_on = serving.ood.drift_detected
        # Latched for the whole episode (first alarm until the next swap): the detector's
        # own flag is per-sample (CUSUM restarts after each alarm) and would flicker
        # between scrapes, so `regulator_drift_detected == 1` could never hold `for:`.
        m.drift_detected.set(1.0 if self._drift_since is not None else 0.0)
        classify = serving.bundle.kind == "classification"
        flat = np.asarray(pred.labels).reshape(n, -1)[:, 0]
        preds: list[Any] = flat.astype(np.int64).tolist() if classify else flat.tolist()
        self.accuracy.record(ids, flat)
        stamped = [(arr, t_now) for arr in arrs]
        with self._lock:
            self._recent.update(zip(ids, stamped, strict=True))
            self._recent_unlabelled.extend(stamped)
            while len(self._recent) > RECENT_SAMPLES:
                self._recent.popitem(last=False)
        outputs = pred.outputs.tolist()
        pv: list[float | None] = list(p_vals) if len(p_vals) == n else [None] * n
        version = serving.version
        for k, slot in enumerate(slots):
            results[slot] = {
                "sample_id": ids[k],
                "prediction": preds[k],
                "outputs": outputs[k],
                "ood_p_value": pv[k],
                "version": version,
            }
        return results

    # -- labels ---------------------------------------------------------------------------

    def add_labels(
        self, items: Iterable[tuple[str, Any, np.ndarray | None]], t: float | None = None
    ) -> dict[str, Any]:
        """Accept labels (by sample id, or with their input ``x``); persisted first.

        ``x`` must fit the served model's input and ``y`` be one of its classes (or a
        finite target): a label that would fail every later recalibration is refused
        here. Returns ``{"accepted": n, "rejected": [{"index", "reason", "detail"}]}``;
        StorageFullError if the state disk cannot store them (then none is accepted).
        """
        t_now = self.clock() if t is None else t
        accepted: list[Label] = []
        matched_ids: list[str] = []
        matched_y: list[Any] = []
        rejected: list[dict[str, Any]] = []
        for i, (sid, y, x) in enumerate(items):
            try:
                y_val = self._check_target(y)
                if x is None:
                    with self._lock:
                        rec = self._recent.get(sid)
                    if rec is None:
                        raise InputError(
                            f"sample {sid!r} is not (or no longer) kept", "unknown_sample"
                        )
                    arr, t_seen = rec
                else:
                    arr, t_seen = self._check_sample(np.asarray(x, dtype=np.float32)), t_now
            except InputError as err:
                self.metrics.samples_rejected.labels(reason=err.reason).inc()
                rejected.append({"index": i, "reason": err.reason, "detail": str(err)})
                continue
            if x is None:
                matched_ids.append(sid)
                matched_y.append(y_val)
            accepted.append(Label(sid, arr, y_val, t_seen))
        if accepted:
            self.state.labels.add(accepted)  # durable before acknowledged
            self.metrics.labels_received.inc(len(accepted))
        if matched_ids:
            self.accuracy.label(matched_ids, np.asarray(matched_y))
            kind = self._serving.bundle.kind
            acc = self.accuracy.accuracy if kind == "classification" else self.accuracy.mae
            if acc is not None:
                self.metrics.accuracy.set(acc)
        return {"accepted": len(accepted), "rejected": rejected}

    def _check_target(self, y: Any) -> int | float:
        """``y`` as the served model takes it: a class index, or a finite target."""
        if self._serving.bundle.kind == "classification":
            n_out = self._serving.bundle.cfg.n_outputs
            if isinstance(y, bool) or not isinstance(y, int | np.integer) or not 0 <= y < n_out:
                raise InputError(f"y must be a class index in [0, {n_out}), got {y!r}", "bad_label")
            return int(y)
        if isinstance(y, bool) or not isinstance(y, int | float | np.number):
            raise InputError(f"y must be a number, got {type(y).__name__}", "bad_value")
        if not math.isfinite(float(y)):
            raise InputError("y must be finite", "non_finite")
        return float(y)

    def _usable(self, labels: list[Label], count: bool = True) -> list[Label]:
        """The stored labels a recalibration can use; the others (stored before the
        edge checked them, or for another model's input or classes) are skipped and
        counted, so that one bad label can never stop every recalibration."""
        good = []
        for lab in labels:
            try:
                arr = self._check_sample(np.asarray(lab.x))
                y = self._check_target(lab.y)
            except (InputError, ValueError, TypeError) as err:
                if count:
                    reason: RejectReason = (
                        err.reason if isinstance(err, InputError) else "bad_value"
                    )
                    self.metrics.labels_skipped.labels(reason=reason).inc()
                    log.warning("label %s skipped: %s", lab.sample_id, err)
                continue
            good.append(Label(lab.sample_id, arr, y, lab.t, lab.env))
        return good

    # -- decisions --------------------------------------------------------------------------

    def signals(self, t: float) -> Signals:
        """What the monitors say now, for the rule engine."""
        self._forget_old(t)
        acc = self.accuracy.accuracy if self._serving.bundle.kind == "classification" else None
        serving = self._serving
        pv = serving.ood.mean_p_value
        return Signals(
            t_s=t,
            drift_detected=self._drift_since is not None,
            ood_pvalue=pv,
            accuracy=acc,
            n_labels=self.accuracy.n_in_window,
            power_w=self.energy.power_w if self.energy.n_inferences > 1 else None,
            silent_layers=tuple(self.density.silent_layers),
            saturated_layers=tuple(self.density.saturated_layers),
            learning_energy_j_today=self._learning_today(),
            recalibrations_last_hour=len(self._recal_times),
        )

    def tick(self, t: float | None = None) -> list[Decision]:
        """Evaluate the rules once and act on their decisions."""
        t_now = self.clock() if t is None else t
        self._last_tick_wall = time.time()
        self.metrics.last_tick.set(self._last_tick_wall)
        self.metrics.power_watts.set(self.energy.power_w)
        self.metrics.set_layers(
            self.density.density, self.density.silent_layers, self.density.saturated_layers
        )
        if self._waiting is not None and not self._recal_running:
            _, _, need = self._split(self._labelled_since_shift())
            self.metrics.calibration_samples_needed.set(need)
            if need == 0:
                trigger, reason = self._waiting
                self._waiting = None
                self.request_recalibration(
                    trigger, mode="supervised", reason=f"labels arrived; {reason}"
                )
        if t_now - self._last_snapshot_t >= SNAPSHOT_EVERY_S:
            self._last_snapshot_t = t_now
            srv = self._serving
            self.state.events.append(
                "snapshot",
                t_s=t_now,
                samples=self.n_samples,
                accuracy=self.accuracy.accuracy,
                ood_p_value=srv.ood.mean_tail_p_value,
                ood_threshold=self._ood_threshold(),
                drift=self._drift_since is not None,
                drift_statistic=srv.ood.statistic,
                drift_threshold=srv.ood.detector.threshold,
                spike_density=dict(self.density.density),
                power_w=self.energy.power_w,
                energy_inference_j=self.energy.inference_j_total,
                energy_learning_j=self.energy.learning_j_total,
                version=srv.version,
            )
        with self._lock:
            refunds, self._refunds = self._refunds, 0
        for _ in range(refunds):  # only real work counts against max_per_hour
            self.engine.refund_recalibration()
        decisions = self.engine.evaluate(self.signals(t_now))
        for d in decisions:
            self.state.events.append(
                "decision", rule=d.rule, action=d.action, reason=d.reason, suppressed=d.suppressed
            )
            if d.suppressed:
                self.metrics.record_recalibration("rule", "skipped")
                continue
            out = self.act(d.action, trigger="rule", reason=d.reason)
            if d.action in RECALIBRATION_ACTIONS and out.get("scheduled") is False:
                self.engine.refund_recalibration()
        return decisions

    def alert_action(self, labels: dict[str, str]) -> str | None:
        """The action a firing Alertmanager alert asks for, by the policy's ``alerts``
        section: its ``action_label`` naming an allowed action, or the deploy rules'
        ``recalibrate="true"`` (a supervised recalibration). None: ignore it."""
        cfg = self.policy.alerts
        if not cfg.enabled:
            return None
        named = labels.get(cfg.action_label, "").strip()
        if named:
            return named if named in cfg.allowed_actions else None
        if labels.get("recalibrate", "").strip().lower() == "true":
            wanted = "recalibrate_supervised"
            return wanted if wanted in cfg.allowed_actions else None
        return None

    def handle_alert(self, action: str, key: str) -> dict[str, Any]:
        """Carry out an alert's action; recalibrations are deduplicated by ``key``."""
        if action == "recalibrate_supervised":
            return self.request_recalibration("alert", mode="supervised", key=key)
        if action == "recalibrate_label_free":
            return self.request_recalibration("alert", mode="label_free", key=key)
        return {"scheduled": True, **self.act(action, trigger="alert", reason=f"alert {key}")}

    def act(self, action: str, trigger: str, reason: str = "") -> dict[str, Any]:
        """Carry out an action (from a rule, a schedule, an alert or the API)."""
        if action == "recalibrate_supervised":
            return self.request_recalibration(trigger, mode="supervised", reason=reason)
        if action == "recalibrate_label_free":
            return self.request_recalibration(trigger, mode="label_free", reason=reason)
        if action == "rollback":
            return self.rollback(trigger=trigger)
        if action == "low_power":
            self.set_low_power(True)
            return {"low_power": True}
        self.state.events.append("alert", trigger=trigger, reason=reason)
        return {"alert_only": True}

    def set_low_power(self, on: bool) -> None:
        """Fewer time steps per inference (policy's low_power_n_steps, default half)."""
        n = self.policy.recalibration.low_power_n_steps or max(
            1, self._serving.bundle.cfg.n_steps // 2
        )
        self._serving.model.n_steps = n if on else self.policy.model.n_steps
        self.low_power = on
        self.state.events.append("low_power", on=on, n_steps=n if on else None)

    # -- recalibration ------------------------------------------------------------------------

    def request_recalibration(
        self, trigger: str, mode: str = "supervised", reason: str = "", key: str | None = None
    ) -> dict[str, Any]:
        """Schedule one recalibration (idempotent while one is pending).

        A request refused here (duplicate, waiting for labels, hourly limit, energy
        budget, one already pending) releases its ``key`` at once: only a job that was
        handed on holds it, until it ends.
        """
        if key is not None:
            with self._lock:
                if key in self._alert_keys:
                    return {"scheduled": False, "reason": "duplicate alert"}
                self._alert_keys.add(key)
        handed_off = False
        try:
            if trigger == "rule" and mode == "supervised" and self._waiting is not None:
                # Already waiting for this episode's labels: tick() runs it once they arrive.
                return {"scheduled": False, "reason": "waiting for labelled samples"}
            if trigger != "rule":
                blocked = self.engine.recalibration_blocked(self.signals(self.clock()))
                if blocked:
                    self.metrics.record_recalibration(trigger, "skipped")
                    self.state.events.append(
                        "recalibration", trigger=trigger, outcome="skipped", reason=blocked
                    )
                    return {"scheduled": False, "reason": blocked}

            def job() -> RecalibrationResult:
                self._recal_running = True
                try:
                    return self.recalibrate(trigger, mode, reason)
                finally:
                    self._recal_running = False
                    if key is not None:
                        with self._lock:
                            self._alert_keys.discard(key)

            if self.inline_jobs or self.submit is None:
                handed_off = True
                res = job()
                return {"scheduled": True, "outcome": res.outcome, "reason": res.reason}
            handed_off = self.submit(RECAL_JOB, job)
            return {
                "scheduled": handed_off,
                "reason": "" if handed_off else "a recalibration is already pending",
            }
        finally:
            if key is not None and not handed_off:
                with self._lock:
                    self._alert_keys.discard(key)

    def _shift_time(self) -> float:
        since = self._serving.swapped_at
        if self._drift_since is not None:
            since = max(since, self._drift_since - LABEL_LOOKBACK_S)
        return since

    def _labelled_since_shift(self, count: bool = False) -> list[Label]:
        """Labels from the current environment: since the last swap, and since the drift
        alarm (less a short lookback for the detection delay) when there is one."""
        since = self._serving.swapped_at
        if self._drift_since is not None:
            since = max(since, self._drift_since - LABEL_LOOKBACK_S)
        return self._usable([lab for lab in self.state.labels.all() if lab.t >= since], count)

    def _split(self, labels: list[Label]) -> tuple[list[Label], list[Label], int]:
        """Support (newest K per class) and holdout (next newest) sets; samples missing."""
        cfg = self.policy.recalibration
        k, h = cfg.k_shot, cfg.holdout_per_class
        kind = self._serving.bundle.kind
        if kind != "classification":
            newest = sorted(labels, key=lambda lab: lab.t, reverse=True)
            need = max(0, k + h - len(newest))
            return newest[h : h + k], newest[:h], need
        # Classes are those the new environment has shown labels for: a class that is
        # absent (gas-drift batches 3-5 have no toluene) must not block recalibration
        # forever. At least two classes are needed for a classifier to adapt.
        by_cls: dict[int, list[Label]] = {}
        for lab in sorted(labels, key=lambda lab: lab.t, reverse=True):
            by_cls.setdefault(int(lab.y), []).append(lab)
        support: list[Label] = []
        holdout: list[Label] = []
        need = (k + h) * max(0, 2 - len(by_cls))
        for c in sorted(by_cls):
            got = by_cls[c]
            need += max(0, k + h - len(got))
            holdout += got[:h]
            support += got[h : h + k]
        return support, holdout, need

    def recalibrate(self, trigger: str, mode: str, reason: str = "") -> RecalibrationResult:
        """Clone, adapt, check on held-out labels, then swap atomically or discard."""
        t_start = self.clock()
        wall0 = time.perf_counter()
        serving = self._serving
        labels = self._labelled_since_shift(count=True)
        support, holdout, need = self._split(labels)
        self.metrics.calibration_samples_needed.set(need)
        if need > 0 and mode == "supervised":
            # Wait for labels (tick() retries once enough arrive); meanwhile adapt
            # label-free if the policy allows it.
            self._waiting = (trigger, reason)
            # The label-free stopgap is only taken when some held-out labels can check it:
            # without labels, a re-normalised model can look in-distribution and still
            # be wrong (measured on the gas-drift replay), and a worse model must never
            # be swapped in.
            if not self.policy.recalibration.allow_label_free_fallback or not holdout:
                if trigger == "rule":
                    with self._lock:
                        self._refunds += 1
                return self._finish(
                    RecalibrationResult(
                        trigger,
                        mode,
                        "skipped",
                        f"waiting for {need} more labelled samples",
                        t_start,
                    ),
                    wall0,
                )
            mode = "label_free"
        elif mode == "supervised":
            self._waiting = None

        # Only real work counts against max_per_hour: not a request that waits for labels.
        self._recal_times.append(t_start)

        def stack(labels: list[Label]) -> tuple[np.ndarray | None, np.ndarray | None]:
            if not labels:
                return None, None
            x = np.stack([np.asarray(lab.x, np.float32) for lab in labels])
            return x, np.asarray([lab.y for lab in labels])

        sx, sy = stack(support) if mode == "supervised" else (None, None)
        hx, hy = stack(holdout)
        recent = self._recent_inputs(since=self._shift_time())
        try:
            tmp = Path(tempfile.mkdtemp(prefix="candidate-", dir=self.state.root))
        except OSError as err:
            return self._finish(
                RecalibrationResult(trigger, mode, "failed", f"state directory: {err}", t_start),
                wall0,
            )
        try:
            req = CandidateRequest(
                model_dir=str(self.registry.path(serving.version)),
                profile=self.policy.device.profile,
                seed=self.policy.device.seed,
                mode=mode,
                support_x=sx,
                support_y=sy,
                holdout_x=hx,
                holdout_y=hy,
                recent_x=recent,
                margin=self.policy.recalibration.acceptance_margin,
                out_dir=str(tmp),
            )
            try:
                res = self.candidate_runner(req, self.policy.recalibration.timeout_s)
            except (RegulatorError, ValueError, RuntimeError, OSError) as err:
                log.exception("recalibration failed")
                return self._finish(
                    RecalibrationResult(trigger, mode, "failed", str(err), t_start), wall0
                )
            self._add_learning_energy(float(res.cost.get("learning_energy_j", 0.0)), t_start)
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
                version = self.registry.add(
                    res.folder,
                    parent=serving.version,
                    trigger=trigger,
                    data_used={
                        "mode": mode,
                        "support": [lab.sample_id for lab in support]
                        if mode == "supervised"
                        else [],
                        "holdout": [lab.sample_id for lab in holdout],
                        "unlabelled": len(recent),
                    },
                    evaluation={**res.evaluation, "reason": reason},
                )
                self.registry.promote(version)
            except (RegulatorError, OSError) as err:
                log.error("recalibration: cannot store the candidate: %s", err)
                return self._finish(
                    RecalibrationResult(
                        trigger, mode, "failed", f"cannot store the candidate: {err}", t_start
                    ),
                    wall0,
                )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        new = self._load_version(version, self.clock())
        if self.low_power:
            new.model.n_steps = serving.model.n_steps
        self._serving = new  # the atomic swap: one reference assignment
        self.drift_window.clear()
        self._prune()
        self.accuracy.reset()
        self._alarm_on = False
        self._drift_since = None
        self.metrics.drift_detected.set(0)
        self.metrics.calibration_samples_needed.set(0)
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

    def _recent_inputs(self, since: float | None = None) -> np.ndarray:
        """Up to 200 of the newest served inputs (seen at or after ``since``)."""
        with self._lock:
            items = [x for x, t in self._recent_unlabelled if since is None or t >= since]
        items = items[-200:]
        return np.stack(items) if items else np.zeros((0,))

    def _report_energy(self, inference_j: float, learning_j: float, t: float, n: int) -> None:
        """Energy monitor update from either thread. A recalibration reports its learning
        energy at its start time, after the main loop has moved on: clamp to the latest
        time reported so the monitor never sees time go backwards (it would raise)."""
        with self._energy_lock:
            t = max(t, self._energy_t)
            self._energy_t = t
            self.energy.update(inference_j, learning_j, t, n_inferences=n)

    def _finish(self, res: RecalibrationResult, wall0: float) -> RecalibrationResult:
        res.seconds = time.perf_counter() - wall0
        self.results.append(res)
        _bound(self.results, keep_all=self.inline_jobs)
        self.metrics.record_recalibration(res.trigger, res.outcome, res.seconds)
        learning_j = float(res.cost.get("learning_energy_j", 0.0))
        if learning_j > 0:
            self.metrics.energy.labels(phase="learning").inc(learning_j)
            self._report_energy(0.0, learning_j, res.t_s, 0)
        self.state.events.append("recalibration", **res.to_dict())
        log.info("recalibration %s: %s (%s)", res.outcome, res.reason, res.trigger)
        self.save_monitors()
        return res

    def _forget_old(self, t: float) -> None:
        while self._recal_times and self._recal_times[0] < t - 3600.0:
            self._recal_times.popleft()

    def _add_learning_energy(self, joules: float, t: float) -> None:
        day = int(t // 86400)
        d, total = self._learning_j_day
        self._learning_j_day = (day, (total if d == day else 0.0) + joules)

    def _learning_today(self) -> float:
        return self._learning_j_day[1]

    # -- rollback ---------------------------------------------------------------------------

    def rollback(self, trigger: str = "http") -> dict[str, Any]:
        """Serve the previous good version."""
        old = self._serving.version
        try:
            version = self.registry.rollback()
        except RegistryError as err:
            self.state.events.append("rollback", trigger=trigger, ok=False, reason=str(err))
            return {"ok": False, "reason": str(err)}
        self._serving = self._load_version(version, self.clock())
        self.metrics.rollbacks.inc()
        self.state.events.append("rollback", trigger=trigger, ok=True, old=old, new=version)
        return {"ok": True, "from": old, "to": version}

    # -- reload -----------------------------------------------------------------------------

    def reload(self, policy: Policy) -> None:
        """Swap in a new, already validated policy (rules, budgets, thresholds)."""
        self.engine = self.engine.rebuilt(policy)
        self.policy = policy
        self.metrics.ood_threshold.set(self._ood_threshold())
        self.state.events.append("reload", ok=True)

    # -- views ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        s = self._serving
        return {
            "device": self.policy.device.id,
            "version": s.version,
            "family": s.bundle.task.get("family"),
            "profile": s.bundle.profile.name,
            "samples": self.n_samples,
            "low_power": self.low_power,
            "monitors": {
                "accuracy": self.accuracy.accuracy,
                "labels_in_window": self.accuracy.n_in_window,
                "ood_mean_p_value": s.ood.mean_p_value,
                "drift_detected": s.ood.drift_detected,
                "spike_density": self.density.density,
                "power_w": self.energy.power_w,
                "energy_j_total": self.energy.energy_j_total,
            },
            "drift": {
                "detected": self._drift_since is not None,
                "statistic": s.ood.statistic,
                "threshold": s.ood.detector.threshold,
                "alarms": s.ood.n_alarms,
                "detections": len(self.detections),
                "explanation": self.explanation,
            },
            "last_recalibrations": [r.to_dict() for r in self.results[-5:]],
            "labels_buffered": len(self.state.labels),
            "degraded": bool(self.registry.problems) or self.state.guard.full,
            "problems": list(self.registry.problems),
            "storage": {
                "full": self.state.guard.full,
                "free_bytes": self.state.guard.free_bytes(),
                "reserve_bytes": self.state.guard.reserve_bytes,
                "state_bytes": self.state.guard.state_bytes(),
                "events_waiting": self.state.events.backlog,
                "events_dropped": self.state.events.dropped,
                "orphans_removed_at_start": self.state.orphans_removed,
            },
        }

    def _explain(self, sample: int) -> None:
        """Explain the detection at ``sample`` over the samples since the detector's
        estimated change point (status, event log, metrics); one extra chip forward, once
        per drift episode."""
        s = self._serving
        change = getattr(s.ood.detector, "change_index", None)
        since = None if change is None else s.ood.n_seen - int(change)
        expl = self.drift_window.explain(s.model, s.ood, sample, last=since)
        if expl is None:
            return
        self.explanation = expl.to_dict()
        self.metrics.set_drift_explanation(
            {c.name: (c.ood_share, c.shift) for c in expl.channels},
            {la.layer: la.ood_share for la in expl.layers},
        )

    def models(self) -> list[dict[str, Any]]:
        cur = self.registry.current()
        return [{**v.as_dict(), "serving": v.version == cur} for v in self.registry.versions()]

    def close(self) -> None:
        self.save_monitors()
        self.state.events.append("shutdown", version=self._serving.version)
        self.state.close()
