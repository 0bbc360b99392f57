"""Where relative paths of a policy (priors, data files, token files) are found."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["repo_root", "resolve_path"]


def repo_root() -> Path:
    """The folder holding ``regulator/`` and ``models/`` (a source checkout)."""
    return Path(__file__).resolve().parents[2]


def resolve_path(p: str | Path) -> Path:
    """A relative path: from the working directory if it exists there, else from the
    source checkout, else from ``<prefix>/share/regulator`` (where an installed copy,
    such as the container image, keeps the shipped ``models/``)."""
    path = Path(p)
    if path.is_absolute() or path.exists():
        return path
    for base in (repo_root(), Path(sys.prefix) / "share" / "regulator"):
        if (base / path).exists():
            return base / path
    return path
