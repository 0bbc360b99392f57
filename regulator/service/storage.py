"""Disk use of the state directory: a reserve the daemon never eats into, appends that
leave nothing torn behind when the disk fills, and how many bytes the state takes.

A write that would leave less than ``reserve_bytes`` free on the state directory's file
system is refused with :class:`~regulator.errors.StorageFullError` before a byte is
written, so the daemon cannot fill the disk by itself; a write that meets a full disk
anyway (another program filled it) is cut back to where it started, so the file holds
only whole lines and the next append after space returns is intact.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> guard = DiskGuard(d, reserve_bytes=0)
>>> f = AppendFile(d / "log.jsonl", guard, "event")
>>> f.write_lines(['{"a":1}'])
>>> f.size()
8
>>> huge = DiskGuard(d, reserve_bytes=1 << 62)
>>> AppendFile(d / "other.jsonl", huge, "label").write_lines(["x"])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
regulator.errors.StorageFullError: label: refused, ... bytes free and the reserve is ...
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from regulator import atomic
from regulator.errors import StorageFullError

__all__ = ["AppendFile", "DiskGuard", "StoreKind", "dumps_line", "read_lines", "tree_bytes"]

log = logging.getLogger(__name__)

StoreKind = Literal["label", "event", "version", "monitors"]
"""What a refused write was for (the ``what`` label of regulator_storage_refused_total)."""

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskGuard:
    """Keeps ``reserve_bytes`` free on the file system of ``root``.

    ``on_refuse(what)`` is called for every refused write (the daemon counts them);
    :attr:`full` is True from a refusal until the next write that goes through.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        reserve_bytes: int = 0,
        on_refuse: Callable[[StoreKind], None] | None = None,
    ) -> None:
        if reserve_bytes < 0:
            raise ValueError(f"reserve_bytes must be >= 0, got {reserve_bytes}")
        self.root = Path(root)
        self.reserve_bytes = reserve_bytes
        self.on_refuse = on_refuse
        self.full = False
        self._size_cache: tuple[float, int] = (-1e9, 0)
        self._lock = threading.Lock()

    def free_bytes(self) -> int:
        """Bytes free to an unprivileged writer on the state directory's file system."""
        st = os.statvfs(self.root)
        return int(st.f_bavail * st.f_frsize)

    def check(self, nbytes: int, what: StoreKind) -> None:
        """Refuse (StorageFullError) a write of ``nbytes`` that would eat into the reserve."""
        free = self.free_bytes()
        if free - nbytes < self.reserve_bytes:
            self.refused(what)
            raise StorageFullError(
                f"{what}: refused, {free} bytes free and the reserve is {self.reserve_bytes} "
                f"(a write of {nbytes} bytes); retry when space returns"
            )

    def refused(self, what: StoreKind) -> None:
        """Note a refused or failed write."""
        if not self.full:
            log.warning("state directory %s is full: refusing %s writes", self.root, what)
        self.full = True
        if self.on_refuse is not None:
            self.on_refuse(what)

    def wrote(self) -> None:
        """Note a write that went through: the disk has room again."""
        if self.full:
            log.warning("state directory %s has room again: writing resumed", self.root)
        self.full = False

    def state_bytes(self, max_age_s: float = 10.0) -> int:
        """Bytes under ``root`` (cached for ``max_age_s``: read at each scrape)."""
        with self._lock:
            t, size = self._size_cache
            now = time.monotonic()
            if now - t > max_age_s:
                size = tree_bytes(self.root)
                self._size_cache = (now, size)
            return size


def tree_bytes(root: str | os.PathLike[str]) -> int:
    """Apparent size of every regular file under ``root`` (no symlinks followed)."""
    total = 0
    stack = [Path(root)]
    while stack:
        with contextlib.suppress(OSError), os.scandir(stack.pop()) as it:
            for entry in it:
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
    return total


class AppendFile:
    """An append-only file where every write is whole lines, fsynced, or nothing."""

    def __init__(self, path: Path, guard: DiskGuard | None, what: StoreKind) -> None:
        self.path = path
        self.guard = guard
        self.what: StoreKind = what
        new = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if new:
            atomic.fsync_dir(path.parent)

    def write_lines(self, lines: Iterable[str]) -> None:
        """Append the lines durably; StorageFullError (nothing written) when the disk or
        its reserve is full, any other OSError as it comes (also nothing written)."""
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        if not data:
            return
        if self.guard is not None:
            self.guard.check(len(data), self.what)
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            os.fsync(self._fd)  # not turns.fsync: callers hold locks serving takes
        except OSError as exc:
            with contextlib.suppress(OSError):  # leave no torn line for the next append
                os.ftruncate(self._fd, start)
            if exc.errno in _FULL_ERRNOS:
                if self.guard is not None:
                    self.guard.refused(self.what)
                raise StorageFullError(f"{self.what}: {self.path}: disk full") from exc
            raise
        if self.guard is not None:
            self.guard.wrote()

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def dumps_line(obj: Any) -> str:
    """One compact, key-sorted JSON line (NaN refused: ValueError)."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, allow_nan=False)


def read_lines(path: Path) -> tuple[list[Any], int]:
    """Parse a JSON-lines file, dropping (and truncating away) a torn last line.

    Returns the records and the number of bad lines skipped.
    """
    records: list[Any] = []
    bad = 0
    if not path.exists():
        return records, bad
    data = path.read_bytes()
    good_end = 0
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:  # torn write at the end: no newline was written
            log.warning("%s: dropping an incomplete last line (%d bytes)", path, len(data) - pos)
            break
        line = data[pos:nl]
        pos = nl + 1
        good_end = pos
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except (ValueError, RecursionError):
            bad += 1
            log.warning("%s: skipping a malformed line", path)
    if good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
            f.flush()
            os.fsync(f.fileno())
    return records, bad
