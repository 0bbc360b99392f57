"""The files a policy names, checked on disk: its prior (``model.prior``), its replay
files (``source.files``) and its token file (``http.token_file``).

Parsing a policy checks its content alone (a policy is valid on a machine without its
files); ``regulator check-config`` and ``regulator run`` also check these, so that a
typo in a path exits 2 with the field's path instead of failing later or deeper.
"""

from __future__ import annotations

from pathlib import Path

from regulator.modelfolder import MANIFEST
from regulator.policy.model import Policy
from regulator.service.paths import resolve_path

__all__ = ["missing_references"]


def _prior_problem(path: Path) -> str | None:
    if not path.is_dir():
        return "no such folder"
    if not (path / MANIFEST).is_file():
        return f"not a model folder (no {MANIFEST})"
    return None


def missing_references(policy: Policy, *, prior: bool = True, token_file: bool = True) -> list[str]:
    """One ``dotted.path: problem`` line per named file that is not there (relative
    paths resolved as the daemon resolves them, :func:`~regulator.service.paths.
    resolve_path`). ``prior=False`` leaves the prior out (a daemon with versions in its
    registry does not read it); ``token_file=False`` the token file (the daemon reads it
    at each request, so it may appear later; until then mutating routes are refused)."""
    problems: list[str] = []
    if prior:
        path = resolve_path(policy.model.prior)
        why = _prior_problem(path)
        if why is not None:
            problems.append(f"model.prior: {policy.model.prior}: {why}")
    for i, name in enumerate(getattr(policy.source, "files", ()) or ()):
        if not resolve_path(name).is_file():
            problems.append(f"source.files.{i}: {name}: no such file")
    token = policy.http.token_file
    if token_file and token is not None and not resolve_path(token).is_file():
        problems.append(f"http.token_file: {token}: no such file")
    return problems
