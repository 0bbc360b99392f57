"""``registry/current``: the registry's single commit point.

One JSON file says which version is served, which versions were ever promoted and which
were rolled back. Every change of state is one atomic rewrite of it
(:func:`regulator.atomic.write_json`), so a kill -9 at any moment leaves either the old
or the new state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from regulator import atomic
from regulator.errors import RegistryError
from regulator.registry.faultpoint import reached
from regulator.registry.names import version_number

__all__ = ["POINTER", "Pointer", "read_pointer", "write_pointer"]

POINTER = "current"


@dataclass(frozen=True)
class Pointer:
    """The served version and the promotion history, as committed."""

    current: str | None = None
    promoted: tuple[str, ...] = field(default_factory=tuple)
    rolled_back: tuple[str, ...] = field(default_factory=tuple)


def read_pointer(root: Path) -> Pointer:
    """The committed pointer (empty before the first commit).

    RegistryError if the file exists but cannot be read as a pointer.
    """
    path = root / POINTER
    if not path.exists():
        return Pointer()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        ptr = Pointer(
            current=raw["current"],
            promoted=tuple(str(v) for v in raw.get("promoted", [])),
            rolled_back=tuple(str(v) for v in raw.get("rolled_back", [])),
        )
        if ptr.current is not None:
            version_number(str(ptr.current))
    except (OSError, ValueError, KeyError, TypeError, RegistryError) as exc:
        raise RegistryError(f"unreadable registry pointer: {exc}") from exc
    return ptr


def write_pointer(root: Path, ptr: Pointer) -> None:
    """Commit ``ptr``: one atomic, durable rewrite of ``registry/current``."""
    reached("commit.before")
    atomic.write_json(
        root / POINTER,
        {
            "current": ptr.current,
            "promoted": list(ptr.promoted),
            "rolled_back": list(ptr.rolled_back),
        },
    )
    reached("commit.written")
