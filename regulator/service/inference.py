"""Inference: serve a batch of samples — check it once, run one chip forward, keep the
inputs for the labels that come later, update the monitor set (at once, or deferred
over a block of batches when the caller has more to serve) — and turn the first alarm
of a drift episode into a detection (counted, explained, logged).
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
from regulator.service.monitors import MonitorSet, ServedBatch
from regulator.service.slot import Served, ServingSlot
from regulator.service.state import EventLog
from regulator.turns import Turns

__all__ = ["DEFER_S", "DEFER_SAMPLES", "Inference", "Result"]

DEFER_SAMPLES = 256
"""At most this many served samples wait for their monitor updates (``defer``)."""

DEFER_S = 0.05
"""And for at most this long (seconds): a scrape never reads signals older than that
plus one batch."""

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
        # batches served whose monitor updates wait for flush(), with their result rows
        self._pending: list[tuple[ServedBatch, list[dict[str, Any]]]] = []
        self._pending_n = 0
        self._pending_since = 0.0  # time.monotonic() when the oldest one was served
        self.detections: list[dict[str, Any]] = []
        self.explanation: dict[str, Any] | None = None  # of the latest detection

    def serve(
        self,
        items: list[tuple[str, Any]],
        t_s: float,
        checked: bool = False,
        defer: bool = False,
    ) -> list[Result]:
        """Serve samples together (one chip forward): one result per item, in order.
        ``checked``: the inputs were checked against the served model already (at the
        HTTP edge), so they are only stacked. ``defer``: the monitors may wait (see
        :meth:`flush`); the results' ``ood_p_value`` is filled in when they run. One
        turn (see :mod:`regulator.turns`)."""
        with self._turns.serving():
            results = self._serve(items, t_s, checked)
            n = self._pending_n
            if n and (
                not defer or n >= DEFER_SAMPLES or time.monotonic() - self._pending_since >= DEFER_S
            ):
                self._flush()
            return results

    @property
    def n_deferred(self) -> int:
        """Samples served whose monitor updates wait for :meth:`flush`."""
        return self._pending_n

    def flush(self) -> None:
        """Run the monitors' work that serving deferred, for every batch served since
        the last flush, as one block (one OOD update, one window add, one accuracy
        record): after a chip forward the monitors' code runs with cold caches, and
        once per block instead of once per batch it costs a fraction. Fills in the
        deferred results' p-values; a detection is handled here."""
        with self._turns.serving():
            self._flush()

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
                results.append({})  # replaced below
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
        self._intake.served(ids, batch, t_s, n_before + 1)
        flat = np.asarray(pred.labels).reshape(n, -1)[:, 0]
        preds: list[Any] = flat.astype(np.int64).tolist() if check.classifies else flat.tolist()
        outputs = pred.outputs.tolist()
        version = served.version
        rows: list[dict[str, Any]] = [
            {"sample_id": sid, "prediction": p, "outputs": o, "ood_p_value": None,
             "version": version}
            for sid, p, o in zip(ids, preds, outputs, strict=True)
        ]  # fmt: skip
        if not results:
            results = list(rows)
        else:
            for slot, row in zip(slots, rows, strict=True):
                results[slot] = row
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append((ServedBatch(served, pred, batch, ids, n_before, t_s), rows))
        self._pending_n += n
        return results

    def _flush(self) -> None:
        pending, self._pending, self._pending_n = self._pending, [], 0
        current = self._slot.served
        k = 0
        while k < len(pending):  # blocks of consecutive batches served by one model
            j = k + 1
            while j < len(pending) and pending[j][0].served is pending[k][0].served:
                j += 1
            group = pending[k:j]
            out = self._monitors.update([b for b, _ in group], current)
            p_values, at = out.p_values, 0
            for _, rows in group:
                if len(p_values) >= at + len(rows):
                    for row, p in zip(rows, p_values[at : at + len(rows)], strict=True):
                        row["ood_p_value"] = p
                at += len(rows)
            if out.raw_alarms:
                self._metrics.drift_raw_alarms.inc(out.raw_alarms)
            for ev in out.events:
                if isinstance(ev, Onset):
                    self._detected(ev, group[0][0].served)
                else:
                    self._events.append("drift_cleared", sample=ev)
            k = j

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
