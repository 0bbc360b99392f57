"""Inference: serve a batch of samples — check it once, run one chip forward, update the
monitor set once, keep the inputs for the labels that come later — and turn the first
alarm of a drift episode into a detection (counted, explained, logged).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from regulator.errors import InputError
from regulator.service.episode import Onset
from regulator.service.intake import Intake
from regulator.service.metrics import Metrics
from regulator.service.monitors import MonitorSet
from regulator.service.slot import Served, ServingSlot
from regulator.service.state import EventLog
from regulator.turns import Turns

__all__ = ["Inference", "Result"]

Result = dict[str, Any] | InputError
"""One served sample (``sample_id``, ``prediction``, ``outputs``, ``ood_p_value``,
``version``), or the InputError that refused it."""


class Inference:
    """The serving path of one device (the main loop's thread)."""

    def __init__(
        self,
        slot: ServingSlot,
        monitors: MonitorSet,
        intake: Intake,
        metrics: Metrics,
        events: EventLog,
        bound: Callable[[list[Any]], None],
        turns: Turns | None = None,
    ) -> None:
        self._turns = turns or Turns()  # shared with the recalibration's steps
        self._slot = slot
        self._monitors = monitors
        self._intake = intake
        self._metrics = metrics
        self._events = events
        self._bound = bound
        self._inference_j = metrics.energy.labels(phase="inference")  # looked up once
        self.n_samples = 0
        self.detections: list[dict[str, Any]] = []
        self.explanation: dict[str, Any] | None = None  # of the latest detection

    def serve(
        self, items: list[tuple[str, Any]], t_s: float, checked: bool = False
    ) -> list[Result]:
        """Serve samples together (one chip forward): one result per item, in order.
        ``checked``: the inputs were checked against the served model already (at the
        HTTP edge), so they are only stacked. One turn (see :mod:`regulator.turns`)."""
        with self._turns.serving():
            return self._serve(items, t_s, checked)

    def _serve(self, items: list[tuple[str, Any]], t_s: float, checked: bool) -> list[Result]:
        m = self._metrics
        served = self._slot.served
        check = served.check
        results: list[Result] = []
        ids: list[str] = []
        slots: list[int] = []
        if checked:
            batch: np.ndarray | None = np.stack([x for _, x in items]) if items else None
        else:
            batch = check.batch([x for _, x in items])
        if batch is not None:  # the common case: one check for the whole batch
            ids = [sid for sid, _ in items]
            slots = list(range(len(items)))
            results = [{} for _ in items]
        else:
            arrs: list[np.ndarray] = []
            for sid, x in items:
                try:
                    arrs.append(check.sample(x))
                except InputError as err:
                    m.samples_rejected.labels(reason=err.reason).inc()
                    results.append(err)
                    continue
                ids.append(sid)
                slots.append(len(results))
                results.append({})  # filled below
            if not arrs:
                return results
            batch = np.stack(arrs)
        self._slot.age(t_s)
        t0 = time.perf_counter()
        pred = served.model.predict(batch)
        dt = time.perf_counter() - t0
        n = len(batch)
        n_before = self.n_samples
        self.n_samples += n
        m.samples.inc(n)
        m.inference_seconds.observe(dt)  # one chip forward, whatever its batch size
        m.synaptic_ops.inc(pred.telemetry.synaptic_ops)
        self._inference_j.inc(pred.energy_j)
        m.dense_ann_energy.inc(pred.dense_ann_j)
        alarms, onset = self._monitors.update(served, pred, batch, ids, n_before, t_s)
        if alarms:
            m.drift_raw_alarms.inc(alarms)
        if onset is not None:
            self._detected(onset, served)
        elif self._monitors.episodes.cleared:
            self._events.append("drift_cleared", sample=self.n_samples)
        self._intake.served(ids, batch, t_s, n_before + 1)
        flat = np.asarray(pred.labels).reshape(n, -1)[:, 0]
        preds: list[Any] = flat.astype(np.int64).tolist() if check.classifies else flat.tolist()
        outputs = pred.outputs.tolist()
        p_vals = served.ood.p_values
        pv: list[float | None] = list(p_vals) if len(p_vals) == n else [None] * n
        version = served.version
        for slot, sid, p, o, v in zip(slots, ids, preds, outputs, pv, strict=True):
            results[slot] = {
                "sample_id": sid,
                "prediction": p,
                "outputs": o,
                "ood_p_value": v,
                "version": version,
            }
        return results

    def _detected(self, onset: Onset, served: Served) -> None:
        """A detection: counted once per episode, explained, logged."""
        self._metrics.drift_alarms.inc()
        det: dict[str, Any] = {"t_s": onset.t_s, "sample": onset.sample, "version": served.version}
        self.explain(onset.sample)
        det["explanation"] = self.explanation
        self.detections.append(det)
        self._bound(self.detections)
        self._events.append("detection", **det, statistic=served.ood.statistic)

    def explain(self, sample: int) -> None:
        """Explain the detection at ``sample`` over the samples since the detector's
        estimated change point (status, event log, metrics); one extra chip forward,
        once per drift episode."""
        s = self._slot.served
        change = getattr(s.ood.detector, "change_index", None)
        since = None if change is None else s.ood.n_seen - int(change)
        expl = self._monitors.window.explain(s.model, s.ood, sample, last=since)
        if expl is None:
            return
        self.explanation = expl.to_dict()
        self._metrics.set_drift_explanation(
            {c.name: (c.ood_share, c.shift) for c in expl.channels},
            {la.layer: la.ood_share for la in expl.layers},
        )
