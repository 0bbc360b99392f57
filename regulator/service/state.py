"""The state directory: event log, labelled-sample buffer, monitor snapshots.

Layout under the state directory (default ``./state``)::

    registry/        the model registry (regulator.registry)
    events.jsonl     the event log, one JSON object a line (events.jsonl.1: the previous one)
    labels.jsonl     the labelled-sample buffer, append-only, compacted by atomic rewrite
    monitors/        monitor baselines and state, one JSON file per name, atomic
    lock             flock'ed by the daemon that owns the directory

Appends are written, flushed and fsynced before the call returns, so an event or a label
that was acknowledged survives kill -9. A line cut short by a crash is dropped (and
truncated away) when the file is reopened.

>>> import tempfile
>>> st = StateDir(tempfile.mkdtemp(), clock=lambda: 100.0)
>>> st.events.append("decision", rule="drift", action="recalibrate")["ts"]
100.0
>>> _ = st.labels.add([Label("s1", [0.5, 1.0], 1, t=99.0), Label("s2", [0.1, 0.2], 0, t=101.0)])
>>> st.labels.class_counts()
{0: 1, 1: 1}
>>> [lab.sample_id for lab in st.labels.labelled_since(100.0)]
['s2']
>>> st.close()
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import math
import os
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from regulator import atomic
from regulator.errors import ConfigError, StorageFullError
from regulator.service.labels import Label, LabelBuffer
from regulator.service.storage import AppendFile, DiskGuard, dumps_line, read_lines

__all__ = [
    "EVENT_KINDS",
    "EventLog",
    "JsonStore",
    "Label",
    "LabelBuffer",
    "StateDir",
]

log = logging.getLogger(__name__)

EVENT_KINDS = frozenset(
    {
        "start",
        "stop",
        "detection",
        "decision",
        "recalibration",
        "rollback",
        "alert",
        "reload",
        "job",
        "error",
    }
)
"""The usual event kinds; any lower-case identifier is accepted."""

CANDIDATE_PREFIX = "candidate-"
"""Folders a recalibration builds its candidate in (removed on the next start if a
kill left one behind)."""

_KIND_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class EventLog:
    """Durable JSON-lines log of what the daemon noticed, decided and did.

    Each line is ``{"ts": seconds, "kind": str, "fields": {...}}``. The file is rotated
    to ``<name>.1`` (older ones shift to ``.2`` … up to ``keep_files``) when it grows
    past ``max_bytes``; :meth:`recent` keeps the last ``keep`` events in memory for
    ``/v1/status``. When the disk is full, events wait in memory (at most
    ``max_backlog``, the oldest dropped and counted) and are written with the next
    append that finds room: the daemon keeps serving either way.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        clock: Callable[[], float] = time.time,
        max_bytes: int = 64 * 1024 * 1024,
        keep: int = 1000,
        keep_files: int = 1,
        guard: DiskGuard | None = None,
        max_backlog: int = 10_000,
    ) -> None:
        if max_bytes <= 0 or keep <= 0 or keep_files <= 0:
            raise ValueError("max_bytes, keep and keep_files must be positive")
        self.path = Path(path)
        self._clock = clock
        self._max_bytes = max_bytes
        self._keep = keep
        self._keep_files = keep_files
        self._guard = guard
        self._lock = threading.Lock()
        records, _ = read_lines(self.path)
        self._recent: list[dict[str, Any]] = [r for r in records if isinstance(r, dict)][-keep:]
        self._backlog: deque[str] = deque(maxlen=max_backlog)
        self.dropped = 0
        """Events lost because the backlog overflowed while the disk was full."""
        self.rotations = 0
        """Rotations since opening."""
        self._remove_extra_rotated()
        self._file = AppendFile(self.path, guard, "event")

    def append(self, kind: str, ts: float | None = None, **fields: Any) -> dict[str, Any]:
        """Write one event durably (or keep it for later if the disk is full) and return
        it. ``fields`` must be JSON-serialisable (non-finite floats are written as null)."""
        return self.append_many([(kind, fields)], ts=ts)[0]

    def append_many(
        self, events: Iterable[tuple[str, dict[str, Any]]], ts: float | None = None
    ) -> list[dict[str, Any]]:
        """Write several events with one write and one fsync; return them."""
        stamp = float(self._clock() if ts is None else ts)
        out = []
        for kind, fields in events:
            if not _KIND_RE.match(kind):
                raise ValueError(f"event kind must be a lower-case identifier, got {kind!r}")
            out.append({"ts": stamp, "kind": kind, "fields": _finite(fields)})
        if not out:
            return out
        lines = [dumps_line(e) for e in out]
        with self._lock:
            pending = [*self._backlog, *lines]
            try:
                self._file.write_lines(pending)
            except OSError as err:  # StorageFullError included: serve on, write later
                overflow = len(self._backlog) + len(lines) - (self._backlog.maxlen or 0)
                self.dropped += max(0, overflow)
                self._backlog.extend(lines)
                if not isinstance(err, StorageFullError):
                    log.warning("event log: write failed, kept in memory: %s", err)
            else:
                if self._backlog:
                    log.warning("event log: %d postponed events written", len(self._backlog))
                self._backlog.clear()
            self._recent.extend(out)
            if len(self._recent) > 2 * self._keep:
                del self._recent[: -self._keep]
            if self._file.size() > self._max_bytes:
                self._rotate()
        return out

    @property
    def backlog(self) -> int:
        """Events waiting in memory for disk space."""
        with self._lock:
            return len(self._backlog)

    def recent(self, n: int = 50, kinds: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """The last ``n`` events (oldest first), optionally of the given kinds only."""
        wanted = None if kinds is None else set(kinds)
        with self._lock:
            events = [e for e in self._recent if wanted is None or e.get("kind") in wanted]
        return events[-n:] if n > 0 else []

    def read_all(self) -> list[dict[str, Any]]:
        """Every event in the current file (not the rotated ones), oldest first."""
        with self._lock:
            records, _ = read_lines(self.path)
        return [r for r in records if isinstance(r, dict)]

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(OSError):
                if self._backlog:
                    self._file.write_lines(list(self._backlog))
                    self._backlog.clear()
            self._file.close()

    def _rotate(self) -> None:
        """events.jsonl -> .1 -> .2 … ; the one past ``keep_files`` is deleted. Renames
        need no free space, so rotation works on a full disk too."""
        self._file.close()
        name = self.path.name
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path.with_name(f"{name}.{self._keep_files}"))
        for k in range(self._keep_files - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(
                    self.path.with_name(f"{name}.{k}"), self.path.with_name(f"{name}.{k + 1}")
                )
        os.replace(self.path, self.path.with_name(f"{name}.1"))
        self._file = AppendFile(self.path, self._guard, "event")
        self.rotations += 1

    def _remove_extra_rotated(self) -> None:
        """Delete rotated files numbered past ``keep_files`` (left by a run with a larger
        ``event_log_files``), so the bound holds after the limit is lowered."""
        for p in self.path.parent.glob(f"{glob.escape(self.path.name)}.*"):
            suffix = p.name[len(self.path.name) + 1 :]
            if suffix.isdigit() and int(suffix) > self._keep_files:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                log.info("event log: removed %s (past event_log_files)", p.name)


def _finite(obj: Any) -> Any:
    """Replace non-finite floats by None, recursively, so the line stays valid JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


class JsonStore:
    """Named JSON documents (monitor baselines and state), each written atomically."""

    def __init__(self, root: str | os.PathLike[str], guard: DiskGuard | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.guard = guard

    def _path(self, name: str) -> Path:
        if not _NAME_RE.match(name):
            raise ValueError(f"bad state name {name!r}: letters, digits, '_', '.', '-' only")
        return self.root / f"{name}.json"

    def save(self, name: str, obj: Any) -> bool:
        """Write atomically; False (logged, the old document kept) if the disk refused."""
        path = self._path(name)
        try:
            if self.guard is not None:
                self.guard.check(4096, "monitors")
            atomic.write_json(path, obj)
        except OSError as err:
            log.warning("%s: not saved: %s", path, err)
            return False
        return True

    def load(self, name: str, default: Any = None) -> Any:
        """The saved document, or ``default`` if there is none or it is unreadable."""
        path = self._path(name)
        try:
            return atomic.read_json(path)
        except FileNotFoundError:
            return default
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable, ignored: %s", path, exc)
            return default

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json"))


class StateDir:
    """Opens (and by default locks) a state directory and its stores.

    A second process opening the same directory with ``lock=True`` gets ConfigError:
    two daemons must not share one state directory. Leftovers of interrupted work
    (temporary files, ``candidate-*`` folders of a recalibration killed mid-way) are
    removed on opening; :attr:`guard` keeps ``reserve_bytes`` free on its disk.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        clock: Callable[[], float] = time.time,
        max_labels: int = 10_000,
        lock: bool = True,
        reserve_bytes: int = 0,
        event_log_max_bytes: int = 64 * 1024 * 1024,
        event_log_files: int = 1,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_file: IO[str] | None = None
        if lock:
            self._acquire_lock()
        self.orphans_removed = self._remove_leftovers()
        self.guard = DiskGuard(self.root, reserve_bytes)
        self.registry_dir = self.root / "registry"
        self.events = EventLog(
            self.root / "events.jsonl",
            clock=clock,
            max_bytes=event_log_max_bytes,
            keep_files=event_log_files,
            guard=self.guard,
        )
        self.labels = LabelBuffer(
            self.root / "labels.jsonl", max_samples=max_labels, guard=self.guard
        )
        self.monitors = JsonStore(self.root / "monitors", guard=self.guard)

    def _remove_leftovers(self) -> int:
        removed = 0
        for p in self.root.iterdir():
            if not (p.name.startswith(atomic.TMP_PREFIX) or p.name.startswith(CANDIDATE_PREFIX)):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            removed += 1
        if removed:
            log.warning("state: removed %d leftovers of interrupted work", removed)
        return removed

    def _acquire_lock(self) -> None:
        f = open(self.root / "lock", "a+", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise ConfigError(
                f"state directory {self.root} is in use by another process (pid {holder})"
            ) from None
        with contextlib.suppress(OSError):  # the pid is informative; the flock is the lock
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
        self._lock_file = f

    def close(self) -> None:
        self.events.close()
        self.labels.close()
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None
