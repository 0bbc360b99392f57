"""Version names: ``v000001``, ``v000002`` … (six digits or more, never reused)."""

from __future__ import annotations

import re

from regulator.errors import RegistryError

__all__ = ["is_version", "version_name", "version_number"]

_VERSION_RE = re.compile(r"^v(\d{6,})$")


def version_name(n: int) -> str:
    """The name of version number ``n``.

    >>> version_name(7)
    'v000007'
    """
    return f"v{n:06d}"


def version_number(version: str) -> int:
    """The number in a version name; RegistryError for anything else.

    >>> version_number("v000012")
    12
    """
    m = _VERSION_RE.match(version)
    if not m:
        raise RegistryError(f"not a version name: {version!r} (expected v000001 …)")
    return int(m.group(1))


def is_version(name: str) -> bool:
    """Whether ``name`` is a version name (a folder name, a pointer entry)."""
    return _VERSION_RE.match(name) is not None
