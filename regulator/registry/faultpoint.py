"""Named points inside registry writes, where a test can kill the process (test only).

Inert unless the environment variable ``REGULATOR_REGISTRY_FAULT`` is set, to
``POINT[@N]:ACTION``: on the ``N``-th time (default 1) this process reaches ``POINT``,
it writes one line naming the point to stderr, then

- ``kill``: sends itself SIGKILL there and then, as ``kill -9`` landing at that point;
- ``kill+S``: sends itself SIGKILL ``S`` seconds later from a timer thread, so that the
  kill lands inside whatever follows (a copy in progress, an fsync);
- ``pause+S``: sleeps ``S`` seconds there (for an outside killer or observer).

The points, in the order a write passes them (see :data:`POINTS`): ``add.start`` (nothing
written yet), ``add.copied`` (the model files copied into the staging folder, no
lineage yet), ``add.staged`` (staging folder complete, not renamed), ``add.renamed``
(the version folder in place, its directory entry not yet fsynced), ``commit.before``
and ``commit.written`` (either side of the pointer's atomic rewrite), ``sync.lineage``
(after one lineage status rewrite, before the others), ``prune.renamed`` (a doomed
version renamed aside, not yet deleted), ``prune.deleted`` (deleted, pointer not yet
rewritten), ``quarantine.moved``.

>>> reached("add.start")  # with the variable unset: nothing happens
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

__all__ = ["ENV", "POINTS", "reached"]

ENV = "REGULATOR_REGISTRY_FAULT"

POINTS = (
    "add.start",
    "add.copied",
    "add.staged",
    "add.renamed",
    "commit.before",
    "commit.written",
    "sync.lineage",
    "prune.renamed",
    "prune.deleted",
    "quarantine.moved",
)

_seen: Counter[str] = Counter()


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def reached(point: str) -> None:
    """Mark that a registry write has reached ``point``; act if the variable names it."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    where, _, action = spec.partition(":")
    name, _, nth = where.partition("@")
    if name not in POINTS:
        raise ValueError(f"{ENV}: unknown point {name!r} (one of {', '.join(POINTS)})")
    if name != point:
        return
    _seen[point] += 1
    if _seen[point] != int(nth or 1):
        return
    kind, _, arg = action.partition("+")
    os.write(2, f"registry fault point {point} reached: {action}\n".encode())
    if kind == "kill" and not arg:
        _kill()
    elif kind == "kill":
        threading.Timer(float(arg), _kill).start()
    elif kind == "pause":
        time.sleep(float(arg))
    else:
        raise ValueError(f"{ENV}: unknown action {action!r} (kill, kill+S, pause+S)")
