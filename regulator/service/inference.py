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
from regulator.service.rows import Result, ServedRows
from regulator.service.slot import Served, ServingSlot
from regulator.service.state import EventLog
from regulator.turns import Turns

__all__ = ["DEFER_S", "DEFER_SAMPLES", "Inference", "Result"]

DEFER_SAMPLES = 1024
"""At most this many served samples wait for their monitor updates (``defer``). The
monitors' cost after a chip forward is mostly per call (their code runs cold), so a
bigger block costs less a sample: at batch 64 the block update cost about 51 us a
forward with 1024, 78-101 with 256, 52 with 4096 (``bench/results/daemon.md``)."""

DEFER_S = 0.05
"""And for at most this long (seconds): a scrape never reads signals older than that
plus one batch."""


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
        self._pending: list[tuple[ServedBatch, ServedRows]] = []
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
    ) -> ServedRows:
        """Serve samples together (one chip forward): one result per item, in order.
        ``checked``: the inputs were checked against the served model already (at the
        HTTP edge), so they are only stacked. ``defer``: the monitors may wait (see
        :meth:`flush`); the results' ``ood_p_value`` is filled in when they run. One
        turn (see :mod:`regulator.turns`)."""
        with self._turns.serving():
            return self._then(self._serve(items, t_s, checked), defer)

    def serve_array(
        self, ids: list[str], x: np.ndarray, t_s: float, defer: bool = False
    ) -> ServedRows:
        """Serve samples given as one array ``[n, C, L]`` with their ``ids`` (a request's
        samples, as the bare chip forward takes them): checked as a whole (a row with
        non-finite values is refused alone; a wrong shape refuses them all, InputError).
        Otherwise as :meth:`serve`."""
        if len(ids) != len(x):
            raise InputError(f"{len(ids)} ids for {len(x)} samples", "bad_shape")
        with self._turns.serving():
            batch, errors = self._slot.served.check.array(x)
            good = ids if not errors else [s for i, s in enumerate(ids) if i not in errors]
            return self._then(self._forward(good, batch, len(ids), errors, t_s), defer)

    def _then(self, rows: ServedRows, defer: bool) -> ServedRows:
        n = self._pending_n
        if n and (
            not defer or n >= DEFER_SAMPLES or time.monotonic() - self._pending_since >= DEFER_S
        ):
            self._flush()
        return rows

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

    def _serve(self, items: list[tuple[str, Any]], t_s: float, checked: bool) -> ServedRows:
        check = self._slot.served.check
        errors: dict[int, InputError] = {}
        if not items:
            return ServedRows.refused(errors, 0, self._slot.served.version)
        if checked:  # float32 [C, L] each: asarray stacks them 2-5x faster than np.stack
            batch: np.ndarray | None = np.asarray([x for _, x in items], dtype=np.float32)
        else:
            batch = check.batch([x for _, x in items])
        if batch is not None:  # the common case: one check for the whole batch
            ids = [sid for sid, _ in items]
        else:
            ids, arrs = [], []
            for i, (sid, x) in enumerate(items):
                try:
                    arrs.append(check.sample(x))
                except InputError as err:
                    errors[i] = err
                    continue
                ids.append(sid)
            batch = np.stack(arrs) if arrs else None
        return self._forward(ids, batch, len(items), errors, t_s)

    def _forward(
        self,
        ids: list[str],
        batch: np.ndarray | None,
        n_items: int,
        errors: dict[int, InputError],
        t_s: float,
    ) -> ServedRows:
        """One chip forward of the checked ``batch`` (None: every item was refused)."""
        m = self._metrics
        served = self._slot.served
        for err in errors.values():
            m.samples_rejected.labels(reason=err.reason).inc()
        if batch is None or not len(batch):
            return ServedRows.refused(errors, n_items, served.version)
        self._slot.age(t_s)
        t0 = time.perf_counter()
        pred = served.model.predict(batch, checked=True)  # checked above: the one validation
        dt = time.perf_counter() - t0
        n = len(batch)
        n_before = self.n_samples
        self.n_samples += n
        self._intake.served(ids, batch, t_s, n_before + 1)
        rows = ServedRows(
            n_items, ids, pred.labels, pred.outputs, served.version, errors, served.check.classifies
        )
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append((ServedBatch(served, pred, batch, ids, n_before, t_s, dt), rows))
        self._pending_n += n
        return rows

    def _flush(self) -> None:
        pending, self._pending, self._pending_n = self._pending, [], 0
        self._count([b for b, _ in pending])
        current = self._slot.served
        k = 0
        while k < len(pending):  # blocks of consecutive batches served by one model
            j = k + 1
            while j < len(pending) and pending[j][0].served is pending[k][0].served:
                j += 1
            group = pending[k:j]
            out = self._monitors.update([b for b, _ in group], current)
            at = 0
            for _, rows in group:
                rows.set_p_values(out.p_values, at)
                at += len(rows.ids)
            if out.raw_alarms:
                self._metrics.drift_raw_alarms.inc(out.raw_alarms)
            for ev in out.events:
                if isinstance(ev, Onset):
                    self._detected(ev, group[0][0].served)
                else:
                    self._events.append("drift_cleared", sample=ev)
            k = j

    def _count(self, block: list[ServedBatch]) -> None:
        """The metrics of the forwards in ``block``, once for all of them (the scrape
        lags serving by at most one block, as the monitors' signals do)."""
        m = self._metrics
        n = 0
        ops = joules = dense_j = 0.0
        for b in block:
            n += len(b.ids)
            ops += b.pred.telemetry.synaptic_ops
            joules += b.pred.energy_j
            dense_j += b.pred.dense_ann_j
            m.inference_seconds.observe(b.forward_s)  # one chip forward, whatever its size
        m.samples.inc(n)
        m.synaptic_ops.inc(ops)
        self._inference_j.inc(joules)
        m.dense_ann_energy.inc(dense_j)

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
