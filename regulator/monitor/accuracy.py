"""Accuracy from delayed labels, over the last N labelled samples.

Predictions are recorded by sample id when they are served (:meth:`record`); labels
arrive later (:meth:`label`) and are matched by id (a label that comes first waits for
its prediction, the newest :data:`EARLY_KEPT` of them). Pairs already matched can be fed
directly with :meth:`update`. Classification reports accuracy; regression reports mean
absolute error and root mean squared error (averaged over output dimensions).
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from regulator.errors import InputError
from regulator.monitor.base import Monitor, check_choice, check_positive_int

TASKS = ("classification", "regression")

EARLY_KEPT = 1024
"""Unmatched labels kept in case their prediction is recorded after them."""


class _Pending:
    """Recorded predictions by sample id, the newest ``most``, kept as the batches
    they were recorded in. Recording a batch is one append, with no per-sample work;
    the id index catches up when a label asks for an id (a batch of 64 recorded per
    sample cost the serving path a few percent of the chip forward)."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.dropped_before = 0  # forgotten unlabelled before a restore
        self._matched = 0  # predictions popped for their label
        self._again = 0  # predictions replaced by a newer one of the same id
        self._firsts: list[int] = []  # each batch's first sequence number
        self._blocks: list[tuple[list[str], np.ndarray]] = []
        self._head = 0  # batches before it are forgotten
        self._kept = 0  # predictions in batches[head:]
        self._seq = 0  # predictions recorded
        self._index: dict[str, int] = {}  # id -> sequence number, for batches[:indexed]
        self._indexed = 0

    def add(self, ids: list[str], p: np.ndarray) -> None:
        n = len(ids)
        if n == 0:
            return
        self._firsts.append(self._seq)
        self._blocks.append((ids, p))
        self._seq += n
        self._kept += n
        while self._kept - len(self._blocks[self._head][0]) >= self.most:
            gone = len(self._blocks[self._head][0])
            self._kept -= gone
            self._head += 1
        if self._head > 1024 and 2 * self._head > len(self._blocks):  # compact
            h = self._head
            del self._blocks[:h], self._firsts[:h]
            self._indexed = max(0, self._indexed - h)
            self._head = 0

    def _oldest(self) -> int:
        """The oldest sequence number still waiting: of the newest ``most``."""
        return self._seq - min(self._kept, self.most)

    def _catch_up(self) -> None:
        for i in range(max(self._indexed, self._head), len(self._blocks)):
            ids, _ = self._blocks[i]
            first = self._firsts[i]
            before = len(self._index)
            self._index.update(zip(ids, range(first, first + len(ids)), strict=True))
            self._again += len(ids) - (len(self._index) - before)
        self._indexed = len(self._blocks)
        if len(self._index) > 2 * self.most:  # forget what is no longer kept
            oldest = self._oldest()
            self._index = {k: v for k, v in self._index.items() if v >= oldest}

    def _at(self, seq: int) -> np.ndarray:
        i = bisect.bisect_right(self._firsts, seq, lo=self._head) - 1
        first = self._firsts[i]
        return self._blocks[i][1][seq - first]

    def pop(self, sid: str) -> np.ndarray | None:
        """The prediction recorded last for ``sid`` (forgotten now), or None."""
        self._catch_up()
        seq = self._index.pop(sid, None)
        if seq is None or seq < self._oldest():
            return None
        self._matched += 1
        return self._at(seq)

    @property
    def dropped(self) -> int:
        """Predictions forgotten without their label (more than ``most`` came after)."""
        live = len(self)
        return self.dropped_before + self._seq - self._matched - self._again - live

    def items(self) -> list[tuple[str, np.ndarray]]:
        """Every prediction still waiting, oldest first."""
        self._catch_up()
        oldest = self._oldest()
        live = sorted((v, k) for k, v in self._index.items() if v >= oldest)
        return [(k, self._at(v)) for v, k in live]

    def __len__(self) -> int:
        self._catch_up()
        oldest = self._oldest()
        return sum(1 for v in self._index.values() if v >= oldest)


class AccuracyMonitor(Monitor):
    """Windowed accuracy (classification) or MAE/RMSE (regression) from delayed labels.

    >>> m = AccuracyMonitor(window=3)
    >>> m.record(["a", "b", "c", "d"], [1, 0, 2, 2])
    >>> m.label(["b", "a", "c", "d"], [0, 1, 1, 2])
    4
    >>> m.accuracy, m.n_labelled
    (0.6666666666666666, 4)
    >>> r = AccuracyMonitor(task="regression")
    >>> r.update(y_true=[[0.0, 0.0], [1.0, 1.0]], y_pred=[[0.0, 2.0], [1.0, 1.0]])
    >>> r.mae, r.rmse
    (0.5, 1.0)
    """

    kind = "accuracy"

    def __init__(
        self, window: int = 200, task: str = "classification", max_pending: int = 100_000
    ) -> None:
        self._window = check_positive_int("window", window)
        self._task = check_choice("task", task, TASKS)
        self._max_pending = check_positive_int("max_pending", max_pending)
        self.reset()

    def reset(self) -> None:
        # per labelled sample: classification (correct,), regression (abs err, sq err)
        self._errs: deque[tuple[float, float]] = deque(maxlen=self._window)
        self._pending = _Pending(self._max_pending)
        # Labels that came before their prediction was recorded (a server that records
        # predictions a moment after serving them): matched when it is, newest kept.
        self._early: OrderedDict[str, np.ndarray] = OrderedDict()
        self._n = 0
        self._unmatched = 0

    def _rows(self, y: ArrayLike, n: int | None = None) -> np.ndarray:
        a = np.asarray(y, dtype=np.float64)
        if a.ndim == 0:
            a = a[None]
        if n is not None and a.shape[0] != n:
            raise InputError(f"expected {n} rows, got {a.shape[0]}")
        if not np.isfinite(a).all():
            raise InputError("labels and predictions must be finite")
        return a

    def update(self, y_true: ArrayLike, y_pred: ArrayLike) -> None:
        """Consume matched (label, prediction) pairs; first axis is the sample."""
        t = self._rows(y_true)
        p = self._rows(y_pred, t.shape[0])
        if t.shape != p.shape:
            raise InputError(f"labels {t.shape} and predictions {p.shape} differ in shape")
        if self._task == "classification":
            flat_t = t.reshape(t.shape[0], -1)
            flat_p = p.reshape(p.shape[0], -1)
            ok = np.all(flat_t == flat_p, axis=1).astype(np.float64)
            pairs = [(float(v), float(v)) for v in ok]
        else:
            d = (t - p).reshape(t.shape[0], -1)
            pairs = [
                (float(a), float(s))
                for a, s in zip(np.abs(d).mean(axis=1), (d * d).mean(axis=1), strict=True)
            ]
        self._errs.extend(pairs)
        self._n += len(pairs)

    def record(self, sample_ids: Sequence[str | int], y_pred: ArrayLike) -> None:
        """Remember predictions until their labels arrive (oldest dropped past max_pending)."""
        p = self._rows(y_pred, len(sample_ids))
        ids = list(map(str, sample_ids))
        self._pending.add(ids, p)
        if self._early:
            self._match_early(ids)

    def _match_early(self, ids: list[str]) -> None:
        yt, yp = [], []
        for sid in ids:
            row = self._early.pop(sid, None)
            if row is None:
                continue
            pred = self._pending.pop(sid)
            if pred is not None:
                yt.append(row)
                yp.append(np.asarray(pred, dtype=np.float64))
                self._unmatched -= 1  # counted unmatched when it came
        if yt:
            self.update(np.stack(yt), np.stack(yp))

    def label(self, sample_ids: Iterable[str | int], y_true: ArrayLike) -> int:
        """Match labels to recorded predictions by id; returns how many matched."""
        ids = [str(s) for s in sample_ids]
        t = self._rows(y_true, len(ids))
        yt, yp = [], []
        for sid, row in zip(ids, t, strict=True):
            pred = self._pending.pop(sid)
            if pred is None:
                self._unmatched += 1
                self._early[sid] = row
                self._early.move_to_end(sid)
                while len(self._early) > EARLY_KEPT:
                    self._early.popitem(last=False)
                continue
            yt.append(row)
            yp.append(np.asarray(pred, dtype=np.float64))
        if yt:
            self.update(np.stack(yt), np.stack(yp))
        return len(yt)

    # results

    @property
    def n_labelled(self) -> int:
        """Labelled samples consumed since reset (not only those in the window)."""
        return self._n

    @property
    def n_in_window(self) -> int:
        return len(self._errs)

    @property
    def n_pending(self) -> int:
        return len(self._pending)

    @property
    def n_unmatched_labels(self) -> int:
        return self._unmatched

    @property
    def accuracy(self) -> float | None:
        """Fraction correct over the window (classification), None without labels."""
        if self._task != "classification" or not self._errs:
            return None
        return sum(e[0] for e in self._errs) / len(self._errs)

    @property
    def mae(self) -> float | None:
        if self._task != "regression" or not self._errs:
            return None
        return sum(e[0] for e in self._errs) / len(self._errs)

    @property
    def rmse(self) -> float | None:
        if self._task != "regression" or not self._errs:
            return None
        return math.sqrt(sum(e[1] for e in self._errs) / len(self._errs))

    @property
    def config(self) -> dict[str, Any]:
        return {"window": self._window, "task": self._task, "max_pending": self._max_pending}

    def summary(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "mae": self.mae,
            "rmse": self.rmse,
            "n_labelled": self.n_labelled,
            "n_in_window": self.n_in_window,
            "n_pending": self.n_pending,
            "n_unmatched_labels": self.n_unmatched_labels,
            "n_dropped_predictions": self._pending.dropped,
        }

    def _get_state(self) -> dict[str, Any]:
        return {
            "errs": [list(e) for e in self._errs],
            "pending": [[k, v.tolist()] for k, v in self._pending.items()],
            "n": self._n,
            "unmatched": self._unmatched,
            "dropped": self._pending.dropped,
        }

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._errs = deque(((float(a), float(b)) for a, b in state["errs"]), maxlen=self._window)
        self._pending = _Pending(self._max_pending)
        pending = [(str(k), v) for k, v in state["pending"]]
        if pending:
            preds = np.asarray([v for _, v in pending], dtype=np.float64)
            self._pending.add([k for k, _ in pending], preds)
        self._pending.dropped_before = int(state["dropped"])
        self._n = int(state["n"])
        self._unmatched = int(state["unmatched"])
