"""``registry/quarantine/``: where damaged versions and pointers are moved, not deleted.

Each entry is named ``<what>-<ns>`` (``v000003-1764650000000000000``), so that a version
number found here is never given again.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from regulator import atomic
from regulator.registry.faultpoint import reached
from regulator.registry.names import is_version, version_number

__all__ = ["QUARANTINE", "move_to_quarantine", "quarantined_numbers"]

log = logging.getLogger(__name__)

QUARANTINE = "quarantine"


def move_to_quarantine(root: Path, path: Path, name: str) -> None:
    """Move ``path`` (inside ``root``) to ``root/quarantine/<name>-<ns>``.

    A path that cannot be moved (read-only disk?) is left where it is, with a log line.
    """
    qdir = root / QUARANTINE
    try:
        qdir.mkdir(exist_ok=True)
        target = qdir / f"{name}-{time.time_ns()}"
        while target.exists():  # the wall clock stepped back onto an earlier entry
            target = target.with_name(target.name + "0")
        os.rename(path, target)
        reached("quarantine.moved")
        atomic.fsync_dir(root)
    except OSError as exc:
        log.error("registry: cannot quarantine %s: %s", path, exc)


def quarantined_numbers(root: Path) -> list[int]:
    """The version numbers of the quarantined versions."""
    qdir = root / QUARANTINE
    if not qdir.is_dir():
        return []
    heads = (q.name.split("-", 1)[0] for q in qdir.iterdir())
    return [version_number(h) for h in heads if is_version(h)]
