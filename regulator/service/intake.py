"""Label intake: the inputs kept for labels that come later, the labels themselves
(durable before acknowledged), and the choice of labels and unlabelled inputs that a
recalibration adapts on.

Recent inputs are kept with their time and their sample number (1-based, since start)
so that a window can be cut exactly at the drift detector's change-point estimate: no
sample of the previous environment re-normalises the new one.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from regulator.errors import InputError, RejectReason
from regulator.service.inputs import InputCheck
from regulator.service.labels import Label, LabelBuffer
from regulator.service.monitors import RECENT_SAMPLES
from regulator.service.recent import RecentInputs
from regulator.turns import checkpoint

__all__ = ["HANDOFF_BATCHES", "UNLABELLED_KEPT", "Intake", "LabelOutcome", "Split", "split_support"]

log = logging.getLogger(__name__)

UNLABELLED_KEPT = 2048
"""Unlabelled inputs kept for label-free adaptation (newest)."""


@dataclass(frozen=True)
class LabelOutcome:
    """What :meth:`Intake.add` did: the labels stored, those matched to an earlier
    prediction (``(sample_id, y)``), and the refusals."""

    accepted: list[Label]
    matched: list[tuple[str, int | float]]
    rejected: list[dict[str, Any]]


@dataclass(frozen=True)
class Split:
    """Labels for a recalibration: the support it adapts on and the holdout it is
    checked on (empty when the check needs none), and how many labels are missing."""

    support: list[Label]
    holdout: list[Label]
    need: int


def split_support(
    labels: list[Label], classifies: bool, k: int, h: int, most: int | None = None
) -> Split:
    """The newest ``h`` per class as holdout (``h`` 0: none) and the next newest as
    support, ``k`` per class needed and at most ``most`` (default ``k``) used. Classes are
    those the new environment has shown labels for (gas batches 3-5 have no toluene),
    at least two for a classifier."""
    top = max(k, most or k)
    if not classifies:
        newest = sorted(labels, key=lambda lab: lab.t, reverse=True)
        need = max(0, k + h - len(newest))
        return Split(newest[h : h + top], newest[:h], need)
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
        support += got[h : h + top]
    return Split(support, holdout, need)


HANDOFF_BATCHES = 64
"""Served batches handed over to the recent inputs at a time (by the serving thread,
unless a reader moved them first)."""


class Intake:
    """Served inputs kept for their labels, and the durable label buffer."""

    def __init__(self, buffer: LabelBuffer, on_skip: Callable[[RejectReason], None]) -> None:
        self.buffer = buffer
        self._on_skip = on_skip
        self._lock = threading.Lock()
        self._recent = RecentInputs(RECENT_SAMPLES)
        # batches just served, handed over without the lock (deque.append is atomic):
        # serving pays no lock round trip; every reader moves them into _recent first
        self._incoming: deque[tuple[list[str], np.ndarray, float, int]] = deque()
        # labels_since's checks of stored labels against one served model's input, by
        # id(stored label): a recalibration re-reads every label of the environment,
        # and checking each again cost ~1.5 us a label of the recalibration thread's
        # GIL time (4-5 ms with 3,000 labels), delaying inference.
        self._checked_for: InputCheck | None = None
        self._checked: dict[int, tuple[Label, Label | InputError]] = {}

    def served(self, ids: list[str], batch: np.ndarray, t_s: float, first: int) -> None:
        """Inputs just served, ``[n, C, L]`` (sample numbers ``first``, ``first + 1``, …).
        The serving thread's only call: the lock is taken once per ``HANDOFF_BATCHES`` batches."""
        incoming = self._incoming
        incoming.append((ids, batch, t_s, first))
        if len(incoming) >= HANDOFF_BATCHES:  # bounded, whether or not labels come
            with self._lock:
                self._recent_now()

    @property
    def n_incoming(self) -> int:
        """Served batches not yet moved into the recent inputs (fewer than
        :data:`HANDOFF_BATCHES`)."""
        return len(self._incoming)

    def _recent_now(self) -> RecentInputs:
        """The recent inputs with every batch served so far (the caller holds the lock)."""
        incoming, recent = self._incoming, self._recent
        while incoming:
            recent.add(*incoming.popleft())
        return recent

    def add(
        self,
        items: Iterable[tuple[str, Any, np.ndarray | None]],
        check: InputCheck,
        t_s: float,
        count_reject: Callable[[RejectReason], None],
    ) -> LabelOutcome:
        """Check and store labels (by sample id, or with their input). Persisted before
        this returns; StorageFullError stores none of them."""
        accepted: list[Label] = []
        matched: list[tuple[str, int | float]] = []
        rejected: list[dict[str, Any]] = []
        for i, (sid, y, x) in enumerate(items):
            try:
                y_val = check.target(y)
                if x is None:
                    with self._lock:
                        rec = self._recent_now().get(sid)
                    if rec is None:
                        raise InputError(
                            f"sample {sid!r} is not (or no longer) kept", "unknown_sample"
                        )
                    arr, t_seen = rec
                else:
                    arr, t_seen = check.sample(x), t_s
            except InputError as err:
                count_reject(err.reason)
                rejected.append({"index": i, "reason": err.reason, "detail": str(err)})
                continue
            if x is None:
                matched.append((sid, y_val))
            accepted.append(Label(sid, arr, y_val, t_seen))
        if accepted:
            self.buffer.add(accepted)  # durable before acknowledged
        return LabelOutcome(accepted, matched, rejected)

    def labels_since(self, t_s: float, check: InputCheck, count: bool) -> list[Label]:
        """Stored labels seen at or after ``t_s`` that the served model can use; the
        others (stored before the edge checked them, or for another model) are skipped
        and, with ``count``, counted: one bad label never stops a recalibration."""
        good = []
        old = self._checked if self._checked_for == check else {}
        checked: dict[int, tuple[Label, Label | InputError]] = {}
        for i, lab in enumerate(self.buffer.all()):
            if i % 256 == 255:
                checkpoint()  # thousands of labels: in turns with serving (no lock held)
            if lab.t < t_s:
                continue
            hit = old.get(id(lab))
            if hit is not None and hit[0] is lab:  # the same stored label, checked before
                out = hit[1]
            else:
                try:
                    out = Label(
                        lab.sample_id, check.sample(lab.x), check.target(lab.y), lab.t, lab.env
                    )
                except InputError as err:
                    out = err
            checked[id(lab)] = (lab, out)
            if isinstance(out, InputError):
                if count:
                    self._on_skip(out.reason)
                    log.warning("label %s skipped: %s", lab.sample_id, out)
                continue
            good.append(out)
        # only labels still stored (and of this environment) stay in the cache
        self._checked_for, self._checked = check, checked
        return good

    def unlabelled(self, since_sample: int, since_t: float, most: int) -> np.ndarray:
        """Up to ``most`` of the newest served inputs from sample ``since_sample`` and
        time ``since_t`` on (of the newest :data:`UNLABELLED_KEPT`), ``[n, C, L]``
        (``[0]`` when none)."""
        with self._lock:
            return self._recent_now().since(since_sample, since_t, most, UNLABELLED_KEPT)

    def time_of_sample(self, sample: int) -> float | None:
        """When sample number ``sample`` (or the first kept one after it) was served."""
        with self._lock:
            return self._recent_now().time_of(sample, UNLABELLED_KEPT)

    def __len__(self) -> int:
        return len(self.buffer)
