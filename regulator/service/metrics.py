"""Every Prometheus metric of the daemon, on a registry that is passed in, never global.

Each series carries the label ``device``. Metrics without other labels are exposed as
ready-bound children (``m.samples.inc()``); labelled ones as :class:`Family` whose
``labels()`` adds the device (``m.samples_rejected.labels(reason="nan").inc()``).
Units are base units: seconds, joules, watts, spikes per neuron per step.

>>> from prometheus_client import CollectorRegistry
>>> reg = CollectorRegistry()
>>> m = Metrics(reg, device="chip0")
>>> m.samples.inc(3)
>>> m.record_recalibration("drift", "accepted", seconds=2.0)
>>> m.set_model("v000002", prior="nanosensor")
>>> reg.get_sample_value("regulator_samples_total", {"device": "chip0"})
3.0
>>> reg.get_sample_value("regulator_recalibrations_total",
...     {"device": "chip0", "trigger": "drift", "outcome": "accepted"})
1.0
>>> reg.get_sample_value("regulator_model_info",
...     {"device": "chip0", "version": "v000002", "prior": "nanosensor"})
1.0
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.metrics import MetricWrapperBase

from regulator.build import build_info

__all__ = [
    "INFERENCE_BUCKETS",
    "RECALIBRATION_BUCKETS",
    "RECALIBRATION_OUTCOMES",
    "Family",
    "Metrics",
]

RECALIBRATION_OUTCOMES = ("accepted", "rejected", "failed", "skipped")
ENERGY_PHASES = ("inference", "learning")
ALERT_STATUSES = ("firing", "resolved")

INFERENCE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
"""Per-sample latency buckets, seconds."""

RECALIBRATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Recalibration job duration buckets, seconds."""

M = TypeVar("M", bound=MetricWrapperBase)


class Family(Generic[M]):
    """A labelled metric with the device label already filled in; ``labelnames`` are
    the metric's label names, ``device`` first, as it was created with."""

    def __init__(self, metric: M, device: str, labelnames: Sequence[str]) -> None:
        self._metric = metric
        self._device = device
        self._names = tuple(labelnames)

    def labels(self, **labels: str) -> M:
        return self._metric.labels(device=self._device, **labels)

    def remove(self, **labels: str) -> None:
        """Drop one series (for instance a layer that no longer exists)."""
        full = {"device": self._device, **labels}
        self._metric.remove(*(full[name] for name in self._names))


class Metrics:
    """Creates the daemon's metrics on ``registry`` for one chip ``device``.

    A second instance on a fresh registry works (reload builds a new one); two on the
    same registry raise ``ValueError`` (duplicated timeseries), by prometheus-client.
    With ``process`` (the default) the registry also gets prometheus-client's
    ``process_*`` metrics of this process (CPU seconds, resident memory, open fds).

    Counters and histograms export no ``*_created`` series: no dashboard, rule or
    alert reads them, they were half the exposition's lines and about a third of its
    render time (bench/results/load_profile.md). prometheus-client reads this switch
    when it renders, for the whole process, so it is turned off here, where every
    daemon, replay and fleet device builds its metrics.
    """

    def __init__(self, registry: CollectorRegistry, device: str, process: bool = True) -> None:
        if not device:
            raise ValueError("device id must be a non-empty string")
        disable_created_metrics()
        self.registry = registry
        self.device = device
        d = ("device",)

        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(name, doc, (*d, *labels), registry=registry)

        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(name, doc, (*d, *labels), registry=registry)

        def hist(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(name, doc, d, registry=registry, buckets=buckets)

        def counters(name: str, doc: str, labels: Sequence[str]) -> Family[Counter]:
            return Family(counter(name, doc, labels), device, (*d, *labels))

        def gauges(name: str, doc: str, labels: Sequence[str]) -> Family[Gauge]:
            return Family(gauge(name, doc, labels), device, (*d, *labels))

        dev = device
        # intake
        self.samples = counter("regulator_samples_total", "Samples served.").labels(dev)
        self.samples_rejected: Family[Counter] = counters(
            "regulator_samples_rejected_total",
            "Samples refused before inference, by reason.",
            ("reason",),
        )
        self.requests_rejected: Family[Counter] = counters(
            "regulator_requests_rejected_total",
            "HTTP requests refused whole (4xx), by reason (RejectReason).",
            ("reason",),
        )
        self.http_server_errors = counter(
            "regulator_http_server_errors_total", "HTTP requests answered with a 5xx."
        ).labels(dev)
        self.labels_skipped: Family[Counter] = counters(
            "regulator_labels_skipped_total",
            "Stored labels a recalibration left out (wrong shape, class), by reason.",
            ("reason",),
        )
        self.labels_received = counter(
            "regulator_labels_total", "Labelled samples accepted into the feedback buffer."
        ).labels(dev)
        self.inference_seconds = hist(
            "regulator_inference_seconds",
            "Chip forward latency, one observation per forward (a batch of 1+ samples).",
            INFERENCE_BUCKETS,
        ).labels(dev)
        # chip telemetry
        self.spike_density: Family[Gauge] = gauges(
            "regulator_spike_density",
            "Spikes per neuron per time step, by layer (recent window).",
            ("layer",),
        )
        self.layer_silent: Family[Gauge] = gauges(
            "regulator_layer_silent", "1 while a layer is silent.", ("layer",)
        )
        self.layer_saturated: Family[Gauge] = gauges(
            "regulator_layer_saturated", "1 while a layer is saturated.", ("layer",)
        )
        self.synaptic_ops = counter(
            "regulator_synaptic_ops_total", "Synaptic operations on the chip."
        ).labels(dev)
        self.energy: Family[Counter] = counters(
            "regulator_energy_joules_total",
            "Chip energy, by phase (inference or learning).",
            ("phase",),
        )
        self.dense_ann_energy = counter(
            "regulator_dense_ann_energy_joules_total",
            "Energy the like-for-like dense ANN would have used: same widths, every input "
            "point the chip saw, MACs x (E_MAC + E_weight_read).",
        ).labels(dev)
        self.power_watts = gauge("regulator_power_watts", "Chip power (recent window).").labels(dev)
        # monitors
        self.ood_score = gauge(
            "regulator_ood_score",
            "Latest OOD score: conformal p-value, with an exponential tail below the "
            "calibration grid's floor 1/(n+1).",
        ).labels(dev)
        self.ood_threshold = gauge(
            "regulator_ood_threshold", "OOD p-value threshold in force."
        ).labels(dev)
        self.drift_detected = gauge(
            "regulator_drift_detected",
            "1 during a drift episode: latched from a detection to the next swap or a long "
            "quiet spell.",
        ).labels(dev)
        self.drift_alarms = counter(
            "regulator_drift_alarms_total",
            "Drift detections: alarms that start an episode (the first after a swap or a "
            "quiet spell); regulator_drift_raw_alarms_total counts the detector's raw alarms.",
        ).labels(dev)
        self.drift_raw_alarms = counter(
            "regulator_drift_raw_alarms_total",
            "The change detector's raw alarms (it restarts after each, so one shift raises many).",
        ).labels(dev)
        self.drift_statistic = gauge(
            "regulator_drift_statistic", "The drift detector's statistic (alarm at threshold)."
        ).labels(dev)
        self.drift_threshold = gauge(
            "regulator_drift_threshold", "The drift detector's calibrated alarm threshold."
        ).labels(dev)

        def explained(name: str, doc: str, label: str) -> Family[Gauge]:
            return gauges(name, doc + " at the latest detection.", (label,))

        self.drift_input_share = explained(
            "regulator_drift_input_share",
            "Share of the OOD score from each input channel or group (0..1, by occlusion; "
            "at most 16 series)",
            "input",
        )
        self.drift_input_shift = explained(
            "regulator_drift_input_shift",
            "Mean shift of each input channel or group, in in-distribution scales",
            "input",
        )
        self.drift_layer_share = explained(
            "regulator_drift_layer_share", "Share of the OOD score from each hidden layer", "layer"
        )
        self._drift_labels: tuple[list[str], list[str]] = ([], [])
        self.accuracy = gauge(
            "regulator_accuracy", "Accuracy over the recent labelled window (0..1)."
        ).labels(dev)
        # adaptation
        self._recalibrations = counter(
            "regulator_recalibrations_total",
            "Recalibrations, by trigger and outcome (accepted|rejected|failed|skipped).",
            ("trigger", "outcome"),
        )
        self.recalibrations: Family[Counter] = Family(
            self._recalibrations, dev, (*d, "trigger", "outcome")
        )
        self.recalibration_seconds = hist(
            "regulator_recalibration_seconds", "Recalibration job duration.", RECALIBRATION_BUCKETS
        ).labels(dev)
        self.calibration_samples_needed = gauge(
            "regulator_calibration_samples_needed",
            "Labelled samples still missing before a supervised recalibration can run.",
        ).labels(dev)
        self.chip_age = gauge(
            "regulator_chip_age_seconds",
            "Seconds of conductance drift since the served weights were written (0 on a "
            "chip without drift, or with device.drift_speedup 0).",
        ).labels(dev)
        self.rollbacks = counter("regulator_rollbacks_total", "Rollbacks performed.").labels(dev)
        self._model_info = gauge(
            "regulator_model_info", "The served model (value 1).", ("version", "prior")
        )
        self._model_labels: tuple[str, str] | None = None
        # operations
        self.policy_reload_failures = counter(
            "regulator_policy_reload_failures_total", "Policy reloads refused."
        ).labels(dev)
        self.scheduler_jobs: Family[Counter] = counters(
            "regulator_scheduler_jobs_total",
            "Scheduler job events that need attention, by job and outcome (missed|failed).",
            ("job", "outcome"),
        )
        self.alerts_received: Family[Counter] = counters(
            "regulator_alerts_received_total",
            "Alertmanager alerts received, by status.",
            ("status",),
        )
        # storage and state health
        self.storage_refused: Family[Counter] = counters(
            "regulator_storage_refused_total",
            "Writes refused for lack of disk space or reserve, by what (label, event, "
            "version, monitors).",
            ("what",),
        )
        self.state_bytes = gauge(
            "regulator_state_bytes", "Bytes used by the state directory (read at scrape)."
        ).labels(dev)
        self.disk_free_bytes = gauge(
            "regulator_disk_free_bytes",
            "Free bytes on the state directory's file system (read at scrape).",
        ).labels(dev)
        self.degraded = gauge(
            "regulator_degraded",
            "1 while the daemon runs degraded (damaged state quarantined at start, or a "
            "full disk); /v1/status says why.",
        ).labels(dev)
        self.quarantined = counter(
            "regulator_registry_quarantined_total",
            "Registry versions or files found damaged and moved to quarantine.",
        ).labels(dev)
        self.last_tick = gauge(
            "regulator_last_tick_timestamp_seconds", "When the main loop last ticked."
        ).labels(dev)
        info = build_info()
        gauge(
            "regulator_build_info",
            "This build (value 1): package version, Python, torch and Norse versions.",
            tuple(info),
        ).labels(dev, *info.values()).set(1)
        if process:
            ProcessCollector(registry=registry)

        for phase in ENERGY_PHASES:
            self.energy.labels(phase=phase)
        for status in ALERT_STATUSES:
            self.alerts_received.labels(status=status)

    def init_reject_series(self, reasons: Iterable[str]) -> None:
        """Create the zero series of every rejection reason, so rates start at 0."""
        for reason in reasons:
            self.samples_rejected.labels(reason=reason)
            self.requests_rejected.labels(reason=reason)

    def init_recalibration_series(self, triggers: Iterable[str]) -> None:
        """Create the zero series for every trigger × outcome, so rates start at 0."""
        for trigger in triggers:
            for outcome in RECALIBRATION_OUTCOMES:
                self.recalibrations.labels(trigger=trigger, outcome=outcome)

    def record_recalibration(
        self, trigger: str, outcome: str, seconds: float | None = None
    ) -> None:
        """Count one recalibration; ``outcome`` is one of RECALIBRATION_OUTCOMES."""
        if outcome not in RECALIBRATION_OUTCOMES:
            raise ValueError(
                f"unknown recalibration outcome {outcome!r}; "
                f"valid: {', '.join(RECALIBRATION_OUTCOMES)}"
            )
        self.recalibrations.labels(trigger=trigger, outcome=outcome).inc()
        if seconds is not None:
            self.recalibration_seconds.observe(seconds)

    def set_model(self, version: str, prior: str) -> None:
        """Point ``regulator_model_info`` at the served model (one series at a time)."""
        if self._model_labels is not None:
            self._model_info.remove(self.device, *self._model_labels)
        self._model_info.labels(self.device, version, prior).set(1)
        self._model_labels = (version, prior)

    def set_drift_explanation(
        self, inputs: dict[str, tuple[float | None, float]], layers: dict[str, float]
    ) -> None:
        """The latest detection's explanation: per input group (share, shift) and per
        layer share; series of groups or layers no longer named are removed."""
        old_inputs, old_layers = self._drift_labels
        for name in set(old_inputs) - set(inputs):
            self.drift_input_share.remove(input=name)
            self.drift_input_shift.remove(input=name)
        for name in set(old_layers) - set(layers):
            self.drift_layer_share.remove(layer=name)
        for name, (share, shift) in inputs.items():
            self.drift_input_share.labels(input=name).set(float("nan") if share is None else share)
            self.drift_input_shift.labels(input=name).set(shift)
        for name, share in layers.items():
            self.drift_layer_share.labels(layer=name).set(share)
        self._drift_labels = (list(inputs), list(layers))
