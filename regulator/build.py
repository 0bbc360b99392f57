"""What this build is: the package's version and the versions of what it runs on.

Read from the installed distributions' metadata, so nothing heavy is imported (``torch``
is not loaded to learn its version).

>>> info = build_info()
>>> sorted(info)
['norse', 'python', 'torch', 'version']
>>> info["version"] == version()
True
"""

from __future__ import annotations

import platform
from importlib import metadata

import regulator

__all__ = ["build_info", "version", "version_line"]


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def version() -> str:
    """This package's version (its distribution's, else ``regulator.__version__``)."""
    found = _dist_version("regulator")
    return regulator.__version__ if found == "unknown" else found


def build_info() -> dict[str, str]:
    """The labels of ``regulator_build_info``: version, python, torch, norse."""
    return {
        "version": version(),
        "python": platform.python_version(),
        "torch": _dist_version("torch"),
        "norse": _dist_version("norse"),
    }


def version_line() -> str:
    """``regulator X (python P, torch T, norse N)``, what ``regulator --version`` prints."""
    i = build_info()
    deps = f"python {i['python']}, torch {i['torch']}, norse {i['norse']}"
    return f"regulator {i['version']} ({deps})"
