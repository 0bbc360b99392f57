"""The labelled-sample buffer of the state directory (``labels.jsonl``).

>>> import tempfile, pathlib
>>> buf = LabelBuffer(pathlib.Path(tempfile.mkdtemp()) / "labels.jsonl")
>>> buf.add([Label("s1", [0.5, 1.0], 1, t=99.0), Label("s2", [0.1, 0.2], 0, t=101.0)])
2
>>> buf.class_counts(), [lab.sample_id for lab in buf.labelled_since(100.0)]
({0: 1, 1: 1}, ['s2'])
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from regulator import atomic
from regulator.errors import DataFormatError
from regulator.service.storage import AppendFile, DiskGuard, dumps_line, read_lines

__all__ = ["Label", "LabelBuffer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Label:
    """One labelled sample: input ``x`` (``[C, L]`` or ``[C]``: an array, or nested
    lists), target ``y`` (class index or regression value), time ``t`` in seconds,
    optional ``env`` tag.

    On disk ``x`` is little-endian float32 in base64 with its shape: writing decimal
    floats cost ~10 ms per 80 samples of CPU (and the serving thread's GIL).

    >>> lab = Label("s1", [[0.5, 1.0], [2.0, -1.0]], 3, 12.0)
    >>> back = Label.from_json(lab.to_json())
    >>> back.x.tolist(), back.y, back.t
    ([[0.5, 1.0], [2.0, -1.0]], 3, 12.0)
    """

    sample_id: str
    x: Any
    y: int | float
    t: float
    env: Any = None

    def to_json(self) -> dict[str, Any]:
        arr = np.ascontiguousarray(self.x, dtype="<f4")
        if not np.isfinite(arr).all():
            raise ValueError(f"label {self.sample_id}: x holds non-finite values")
        return {
            "sample_id": self.sample_id,
            "x_f32": base64.b64encode(arr.tobytes()).decode("ascii"),
            "shape": list(arr.shape),
            "y": self.y,
            "t": self.t,
            "env": self.env,
        }

    @classmethod
    def from_json(cls, obj: Any) -> Label:
        if not isinstance(obj, dict):
            raise DataFormatError("label record is not an object")
        try:
            y = obj["y"]
            if isinstance(y, bool) or not isinstance(y, int | float):
                raise TypeError("y must be a number")
            if "x_f32" in obj:
                raw = base64.b64decode(obj["x_f32"], validate=True)
                shape = tuple(int(d) for d in obj["shape"])
                x = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
            else:  # the earlier format: decimal lists
                x = np.asarray(obj["x"], dtype=np.float32)
            return cls(
                sample_id=str(obj["sample_id"]),
                x=x,
                y=y,
                t=float(obj["t"]),
                env=obj.get("env"),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise DataFormatError(f"bad label record: {exc}") from exc


@dataclass
class _Pending:
    """One caller's labels waiting for the group commit."""

    labels: list[Label]
    lines: list[str]
    done: bool = False
    error: BaseException | None = None


class LabelBuffer:
    """Bounded, durable buffer of labelled samples, newest last.

    :meth:`add` returns only after the labels are fsynced, so a label that was
    acknowledged is never lost. A sample id added again replaces the older record.
    Beyond ``max_samples`` the oldest are dropped; the file is compacted (atomic
    rewrite) once it holds ``compact_factor`` times more lines than the buffer. On a
    full disk (or past the guard's reserve) :meth:`add` raises StorageFullError and
    nothing is stored or acknowledged; compaction waits for room.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_samples: int = 10_000,
        compact_factor: float = 2.0,
        guard: DiskGuard | None = None,
    ) -> None:
        if max_samples <= 0:
            raise ValueError(f"max_samples must be positive, got {max_samples}")
        if compact_factor <= 1.0:
            raise ValueError(f"compact_factor must be > 1, got {compact_factor}")
        self.path = Path(path)
        self.max_samples = max_samples
        self._compact_factor = compact_factor
        self._lock = threading.Lock()
        self._commit = threading.Condition(threading.Lock())  # the group commit's queue
        self._queue: list[_Pending] = []
        self._writing = False
        self._items: dict[str, Label] = {}
        records, bad = read_lines(self.path)
        for rec in records:
            try:
                lab = Label.from_json(rec)
            except DataFormatError as exc:
                bad += 1
                log.warning("%s: skipping a record: %s", self.path, exc)
                continue
            self._items.pop(lab.sample_id, None)
            self._items[lab.sample_id] = lab
        self._trim()
        self._lines = len(records) + bad
        self._guard = guard
        self._file = AppendFile(self.path, guard, "label")
        self.compactions = 0
        """Compactions (atomic rewrites) since opening."""
        if bad or self._lines > self._compact_factor * self.max_samples:
            self._compact()

    def add(self, labels: Iterable[Label]) -> int:
        """Persist ``labels`` (fsync) and then make them visible; return how many.

        Group commit: callers that arrive while a write is under way queue their lines;
        the next writer takes every queued batch and writes them with one write and one
        fsync, and each caller returns only once its own lines are durable (or raises the
        error that write met, with none of its labels stored)."""
        batch = list(labels)
        if not batch:
            return 0
        lines = [dumps_line(lab.to_json()) for lab in batch]  # raises on NaN before writing
        entry = _Pending(batch, lines)
        with self._commit:
            self._queue.append(entry)
            while not entry.done:
                if self._writing:
                    self._commit.wait()
                    continue
                group, self._queue = self._queue, []
                self._writing = True
                self._commit.release()
                error: BaseException | None = None
                try:
                    with self._lock:
                        self._file.write_lines([ln for g in group for ln in g.lines])
                except BaseException as err:
                    error = err
                finally:
                    self._commit.acquire()
                    self._writing = False
                if error is None:
                    self._publish(group)
                for g in group:
                    g.done, g.error = True, error
                self._commit.notify_all()
        if entry.error is not None:
            raise entry.error
        return len(batch)

    def _publish(self, group: list[_Pending]) -> None:
        """Durable now: make the group's labels visible."""
        with self._lock:
            for g in group:
                self._lines += len(g.lines)
                for lab in g.labels:
                    self._items.pop(lab.sample_id, None)
                    self._items[lab.sample_id] = lab
            self._trim()
            if self._lines > self._compact_factor * self.max_samples:
                self._compact()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, sample_id: object) -> bool:
        with self._lock:
            return sample_id in self._items

    def all(self) -> list[Label]:
        """Every buffered label, oldest first."""
        with self._lock:
            return list(self._items.values())

    def labelled_since(self, t: float) -> list[Label]:
        """Labels with time ``t`` or later, in insertion order."""
        with self._lock:
            return [lab for lab in self._items.values() if lab.t >= t]

    def class_counts(self, since: float | None = None) -> dict[int | float, int]:
        """How many labels per class (value of ``y``), optionally since a time."""
        with self._lock:
            counts = Counter(
                lab.y for lab in self._items.values() if since is None or lab.t >= since
            )
        return dict(sorted(counts.items()))

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def _trim(self) -> None:
        excess = len(self._items) - self.max_samples
        if excess > 0:
            for key in list(self._items)[:excess]:
                del self._items[key]

    def _compact(self) -> None:
        # May use the reserve: it frees space once done. If even that fails, the old
        # file stays whole and appends go on; compaction is retried on a later add.
        text = "".join(dumps_line(lab.to_json()) + "\n" for lab in self._items.values())
        try:
            atomic.write_text(self.path, text)
        except OSError as err:
            log.warning("%s: compaction postponed: %s", self.path, err)
            return
        self._file.close()
        self._lines = len(self._items)
        self._file = AppendFile(self.path, self._guard, "label")
        self.compactions += 1
