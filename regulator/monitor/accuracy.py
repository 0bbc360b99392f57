"""Accuracy from delayed labels, over the last N labelled samples.

Predictions are recorded by sample id when they are served (:meth:`record`); labels
arrive later (:meth:`label`) and are matched by id. Pairs already matched can be fed
directly with :meth:`update`. Classification reports accuracy; regression reports mean
absolute error and root mean squared error (averaged over output dimensions).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from regulator.errors import InputError
from regulator.monitor.base import Monitor, check_choice, check_positive_int

TASKS = ("classification", "regression")


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
        self._pending: OrderedDict[str, Any] = OrderedDict()
        self._n = 0
        self._unmatched = 0
        self._dropped = 0

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
        ids = [str(s) for s in sample_ids]
        again = [sid for sid in ids if sid in self._pending]
        self._pending.update(zip(ids, p.tolist(), strict=True))
        for sid in again:  # a re-recorded id counts as the newest
            self._pending.move_to_end(sid)
        while len(self._pending) > self._max_pending:
            self._pending.popitem(last=False)
            self._dropped += 1

    def label(self, sample_ids: Iterable[str | int], y_true: ArrayLike) -> int:
        """Match labels to recorded predictions by id; returns how many matched."""
        ids = [str(s) for s in sample_ids]
        t = self._rows(y_true, len(ids))
        yt, yp = [], []
        for sid, row in zip(ids, t, strict=True):
            pred = self._pending.pop(sid, None)
            if pred is None:
                self._unmatched += 1
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
            "n_dropped_predictions": self._dropped,
        }

    def _get_state(self) -> dict[str, Any]:
        return {
            "errs": [list(e) for e in self._errs],
            "pending": [[k, v] for k, v in self._pending.items()],
            "n": self._n,
            "unmatched": self._unmatched,
            "dropped": self._dropped,
        }

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._errs = deque(((float(a), float(b)) for a, b in state["errs"]), maxlen=self._window)
        self._pending = OrderedDict((str(k), v) for k, v in state["pending"])
        self._n = int(state["n"])
        self._unmatched = int(state["unmatched"])
        self._dropped = int(state["dropped"])
