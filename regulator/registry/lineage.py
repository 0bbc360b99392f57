"""``<version>/lineage.json``: where a version came from, and what became of it.

It holds ``version, parent, trigger, data_used, evaluation, created_at`` (seconds since
the epoch, from the registry's clock) and ``status`` ("good" or "rolled_back"). The
status is a mirror of the pointer (:mod:`regulator.registry.pointer`), which is
authoritative; :func:`sync_status` repairs the mirror after a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from regulator import atomic
from regulator.errors import RegistryError
from regulator.registry.faultpoint import reached

__all__ = ["LINEAGE", "Status", "VersionInfo", "check_lineage", "new_lineage", "read_info",
           "sync_status"]  # fmt: skip

log = logging.getLogger(__name__)

LINEAGE = "lineage.json"

Status = Literal["good", "rolled_back"]


@dataclass(frozen=True)
class VersionInfo:
    """One registry version and its lineage, as read from disk."""

    version: str
    parent: str | None
    trigger: str
    data_used: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    status: Status = "good"
    promoted: bool = False
    current: bool = False

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for ``/v1/models``)."""
        return {
            "version": self.version,
            "parent": self.parent,
            "trigger": self.trigger,
            "data_used": dict(self.data_used),
            "evaluation": dict(self.evaluation),
            "created_at": self.created_at,
            "status": self.status,
            "promoted": self.promoted,
            "current": self.current,
        }


def new_lineage(
    version: str,
    parent: str | None,
    trigger: str,
    data_used: Mapping[str, Any] | None,
    evaluation: Mapping[str, Any] | None,
    created_at: float,
) -> dict[str, Any]:
    """The lineage of a version being added (status "good")."""
    return {
        "version": version,
        "parent": parent,
        "trigger": trigger,
        "data_used": dict(data_used or {}),
        "evaluation": dict(evaluation or {}),
        "created_at": float(created_at),
        "status": "good",
    }


def read_info(folder: Path, status: Status, promoted: bool, current: bool) -> VersionInfo:
    """The lineage of the version in ``folder``, with its pointer-given status."""
    try:
        lineage = atomic.read_json(folder / LINEAGE)
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{folder.name}: unreadable {LINEAGE}: {exc}") from exc
    return VersionInfo(
        version=folder.name,
        parent=lineage.get("parent"),
        trigger=str(lineage.get("trigger", "")),
        data_used=dict(lineage.get("data_used") or {}),
        evaluation=dict(lineage.get("evaluation") or {}),
        created_at=float(lineage.get("created_at", 0.0)),
        status=status,
        promoted=promoted,
        current=current,
    )


def check_lineage(folder: Path) -> None:
    """RegistryError (or OSError/ValueError) unless ``folder`` has a lineage of itself."""
    lineage = atomic.read_json(folder / LINEAGE)
    if not isinstance(lineage, dict) or lineage.get("version") != folder.name:
        raise RegistryError(f"{LINEAGE} does not describe {folder.name}")


def sync_status(root: Path, versions: Iterable[str], status: Callable[[str], Status]) -> None:
    """Mirror the pointer's statuses into each lineage.json (repairs after a crash).

    Best effort: on a full disk the pointer, which is authoritative, still says it.
    """
    for v in versions:
        path = root / v / LINEAGE
        try:
            lineage = atomic.read_json(path)
            want = status(v)
            if isinstance(lineage, dict) and lineage.get("status") != want:
                lineage["status"] = want
                atomic.write_json(path, lineage)
                reached("sync.lineage")
        except (OSError, ValueError) as exc:
            log.debug("registry: lineage of %s not synced: %s", v, exc)
