"""``regulator check-config FILE``: validate a policy file without running anything."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from regulator.errors import ConfigError
from regulator.policy.model import load_policy
from regulator.policy.references import missing_references

__all__ = ["check_config"]


def check_config(path: Path | str, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Validate ``path``: 0 with a one-line summary on ``out`` (default stdout), or 2 with
    every error, each with its dotted field path, on ``err`` (default stderr); the files
    it names (prior, replay files) must be there too, and a token file that is not there
    yet is warned of."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        policy = load_policy(Path(path))
    except ConfigError as exc:
        print(exc, file=err)
        return 2
    missing = missing_references(policy, token_file=False)
    if missing:
        print(f"{path}: names files that are not there:", file=err)
        for line in missing:
            print(f"  {line}", file=err)
        return 2
    # the token file may be mounted later (a container secret): a warning, not an error
    for line in missing_references(policy, prior=False, token_file=True):
        if line.startswith("http.token_file"):
            print(f"{path}: warning: {line} (mutating routes refused until it is)", file=err)
    print(
        f"{path}: valid policy for device {policy.device.id!r} "
        f"({len(policy.rules)} rules, {len(policy.schedules)} schedules)",
        file=out,
    )
    return 0
