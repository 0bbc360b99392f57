"""Atomic file writes: a reader, or a process restarted after kill -9, sees either the
old content or the new, never a mix.

The recipe: write a temporary file in the same directory (so the rename stays on one
file system), flush and fsync it, rename it over the target, then fsync the directory so
the rename itself survives a power cut.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_json(d / "x.json", {"a": 1})
>>> read_json(d / "x.json")
{'a': 1}
>>> sorted(p.name for p in d.iterdir())
['x.json']
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from regulator.turns import fsync

__all__ = [
    "TMP_PREFIX",
    "fsync_dir",
    "read_json",
    "write_bytes",
    "write_json",
    "write_text",
]

TMP_PREFIX = ".tmp-"
"""Prefix of every temporary file or directory we create; leftovers with it are debris
of an interrupted write and are safe to delete."""


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that renames and creations inside it are durable."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    fd = os.open(path, flags)
    try:
        fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Replace the file at ``path`` with ``data``, atomically and durably."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + target.name + ".", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)


def write_text(path: str | os.PathLike[str], text: str, mode: int = 0o644) -> None:
    """Replace the file at ``path`` with UTF-8 ``text``, atomically and durably."""
    write_bytes(path, text.encode("utf-8"), mode=mode)


def write_json(path: str | os.PathLike[str], obj: Any, mode: int = 0o644) -> None:
    """Replace the file at ``path`` with ``obj`` as indented, key-sorted JSON.

    Non-finite floats are refused (``ValueError``): JSON has no NaN.
    """
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_text(path, text, mode=mode)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)
