"""The versioned model store under ``<state_dir>/registry``.

Layout::

    registry/
      v000001/            a verified model folder (files + manifest.json) plus lineage.json
      v000002/
      current             JSON, the single commit point: which version is served, which
                          versions were ever promoted, which were rolled back

``lineage.json`` holds ``version, parent, trigger, data_used, evaluation, created_at``
(seconds since the epoch, from the registry's clock) and ``status`` ("good" or
"rolled_back"). The status is mirrored from ``current``, which is authoritative: every
change of state is one atomic rewrite of ``current``, so a kill -9 at any point leaves
either the old or the new state. A version folder appears by one directory rename, and
temporary leftovers of interrupted writes are removed when the registry is opened.

Damage never stops the service: :meth:`Registry.open_serving` checks every version at
start, moves a damaged one (checksum, missing file, unreadable manifest or lineage) to
``registry/quarantine/``, and serves the served version if it is sound, else the newest
sound version that served, else a fresh import of the shipped prior; an unreadable or
dangling ``current`` is quarantined and rebuilt. :attr:`Registry.problems` says what
was found. :meth:`Registry.prune` keeps the newest N versions and the newest M that
ever served (the first version and the served one always).

>>> import tempfile, pathlib
>>> from regulator.modelfolder import write_manifest
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> prior = tmp / "prior"; prior.mkdir()
>>> _ = (prior / "weights.safetensors").write_bytes(b"w0")
>>> _ = write_manifest(prior, {"prior": "demo"})
>>> reg = Registry(tmp / "registry", clock=lambda: 0.0)
>>> reg.bootstrap(prior)
'v000001'
>>> _ = (prior / "weights.safetensors").write_bytes(b"w1")
>>> _ = write_manifest(prior, {"prior": "demo"})
>>> v = reg.add(prior, parent="v000001", trigger="drift", data_used={"n": 10},
...             evaluation={"candidate": 0.9, "serving": 0.7})
>>> reg.promote(v); reg.current()
'v000002'
>>> reg.rollback()
'v000001'
>>> [(i.version, i.status) for i in reg.versions()]
[('v000001', 'good'), ('v000002', 'rolled_back')]
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from regulator import atomic, modelfolder
from regulator.errors import ModelFolderError, RegistryError, RegulatorError

if TYPE_CHECKING:
    from regulator.service.storage import DiskGuard

__all__ = ["LINEAGE", "Registry", "VersionInfo"]

log = logging.getLogger(__name__)

LINEAGE = "lineage.json"
QUARANTINE = "quarantine"
_POINTER = "current"
T = TypeVar("T")
_VERSION_RE = re.compile(r"^v(\d{6,})$")

Status = Literal["good", "rolled_back"]


def _version_name(n: int) -> str:
    return f"v{n:06d}"


def _version_number(version: str) -> int:
    m = _VERSION_RE.match(version)
    if not m:
        raise RegistryError(f"not a version name: {version!r} (expected v000001 …)")
    return int(m.group(1))


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


@dataclass
class _Pointer:
    current: str | None = None
    promoted: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)


class Registry:
    """Versioned, crash-safe model store. Thread-safe; one process per ``root``.

    ``clock`` gives ``created_at`` in seconds (simulated time in replay).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        clock: Callable[[], float] = time.time,
        guard: DiskGuard | None = None,
    ):
        self.root = Path(root)
        self._clock = clock
        self._guard = guard
        self._lock = threading.RLock()
        self.problems: list[dict[str, str]] = []
        """What was found damaged or missing (``{"what", "reason"}``), for /v1/status."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._clean_leftovers()
        self._pointer = self._read_pointer()
        self._sync_lineage_status()

    # -- reading ---------------------------------------------------------------------

    def current(self) -> str | None:
        """The version being served, or None before bootstrap."""
        with self._lock:
            return self._pointer.current

    def path(self, version: str) -> Path:
        """The folder of ``version``; RegistryError if it does not exist."""
        _version_number(version)
        p = self.root / version
        if not p.is_dir():
            raise RegistryError(f"unknown version {version!r}")
        return p

    def verify(self, version: str) -> dict[str, Any]:
        """Check the version's checksums; return its manifest (ChecksumError on damage)."""
        return modelfolder.verify(self.path(version))

    def versions(self) -> list[VersionInfo]:
        """Every version on disk, oldest first."""
        with self._lock:
            return [self._info(v) for v in self._version_names()]

    def info(self, version: str) -> VersionInfo:
        """Lineage and status of one version."""
        with self._lock:
            self.path(version)
            return self._info(version)

    # -- changing --------------------------------------------------------------------

    def add(
        self,
        src_folder: str | os.PathLike[str],
        parent: str | None,
        trigger: str,
        data_used: Mapping[str, Any] | None = None,
        evaluation: Mapping[str, Any] | None = None,
    ) -> str:
        """Copy a verified model folder in as the next version (not yet served).

        Raises ChecksumError/ModelFolderError if ``src_folder`` is damaged, RegistryError
        for an unknown parent.
        """
        with self._lock:
            if parent is not None:
                self.path(parent)
            version = _version_name(self._last_number() + 1)
            lineage = {
                "version": version,
                "parent": parent,
                "trigger": trigger,
                "data_used": dict(data_used or {}),
                "evaluation": dict(evaluation or {}),
                "created_at": float(self._clock()),
                "status": "good",
            }
            if self._guard is not None:
                self._guard.check(_folder_bytes(Path(src_folder)), "version")
            stage = self.root / f"{atomic.TMP_PREFIX}stage-{version}"
            if stage.exists():
                shutil.rmtree(stage)
            try:
                modelfolder.copy_verified(src_folder, stage)
                atomic.write_json(stage / LINEAGE, lineage)
                os.rename(stage, self.root / version)
            except BaseException:
                with contextlib.suppress(OSError):
                    shutil.rmtree(stage)
                raise
            atomic.fsync_dir(self.root)
            log.info("registry: added %s (parent %s, trigger %s)", version, parent, trigger)
            return version

    def promote(self, version: str) -> None:
        """Serve ``version`` from now on (after checking its checksums)."""
        with self._lock:
            self.verify(version)
            p = self._pointer
            new = _Pointer(
                current=version,
                promoted=p.promoted + ([version] if version not in p.promoted else []),
                rolled_back=[v for v in p.rolled_back if v != version],
            )
            self._commit(new)
            log.info("registry: serving %s", version)

    def rollback(self) -> str:
        """Mark the current version rolled back and serve the newest older good version
        that was served before (skipping damaged ones); return it.

        RegistryError if there is none.
        """
        with self._lock:
            p = self._pointer
            if p.current is None:
                raise RegistryError("nothing is served yet; nothing to roll back")
            cur = _version_number(p.current)
            candidates = sorted(
                (
                    v
                    for v in p.promoted
                    if v not in p.rolled_back
                    and _version_number(v) < cur
                    and (self.root / v).is_dir()
                ),
                key=_version_number,
                reverse=True,
            )
            for target in candidates:
                try:
                    self.verify(target)
                except ModelFolderError as exc:
                    log.warning("registry: cannot roll back to %s: %s", target, exc)
                    continue
                old = p.current
                self._commit(
                    _Pointer(
                        current=target,
                        promoted=list(p.promoted),
                        rolled_back=[*p.rolled_back, old],
                    )
                )
                log.warning("registry: rolled back %s, serving %s", old, target)
                return target
            raise RegistryError(f"no earlier good version to roll back to from {p.current}")

    def bootstrap(self, prior_folder: str | os.PathLike[str]) -> str:
        """On first start, import the shipped prior as v000001 and serve it.

        Idempotent: with a served version already, returns it unchanged; after a crash
        between adding and promoting, promotes the newest good version on disk.
        """
        with self._lock:
            if self._pointer.current is not None:
                return self._pointer.current
            names = self._version_names()
            if not names:
                version = self.add(
                    prior_folder,
                    parent=None,
                    trigger="bootstrap",
                    data_used={"source": str(prior_folder)},
                )
            else:
                version = names[-1]
            self.promote(version)
            return version

    # -- internals -------------------------------------------------------------------

    def _version_names(self) -> list[str]:
        names = [p.name for p in self.root.iterdir() if p.is_dir() and _VERSION_RE.match(p.name)]
        return sorted(names, key=_version_number)

    def _clean_leftovers(self) -> None:
        for p in self.root.iterdir():
            if p.name.startswith(atomic.TMP_PREFIX):
                log.warning("registry: removing leftover of an interrupted write: %s", p.name)
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()

    def _read_pointer(self) -> _Pointer:
        path = self.root / _POINTER
        if not path.exists():
            return _Pointer()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            ptr = _Pointer(
                current=raw["current"],
                promoted=[str(v) for v in raw.get("promoted", [])],
                rolled_back=[str(v) for v in raw.get("rolled_back", [])],
            )
            if ptr.current is not None:
                _version_number(str(ptr.current))
        except (OSError, ValueError, KeyError, TypeError, RegistryError) as exc:
            self._problem(_POINTER, f"unreadable registry pointer: {exc}")
            self._quarantine_path(path, _POINTER)
            return _Pointer()
        if ptr.current is not None and not (self.root / ptr.current).is_dir():
            self._problem(_POINTER, f"points at missing version {ptr.current!r}")
            ptr.current = None
        return ptr

    def _commit(self, new: _Pointer) -> None:
        atomic.write_json(
            self.root / _POINTER,
            {
                "current": new.current,
                "promoted": new.promoted,
                "rolled_back": new.rolled_back,
            },
        )
        self._pointer = new
        self._sync_lineage_status()

    def _status(self, version: str) -> Status:
        return "rolled_back" if version in self._pointer.rolled_back else "good"

    def _sync_lineage_status(self) -> None:
        """Mirror the pointer's statuses into each lineage.json (repairs after a crash).
        Best effort: on a full disk the pointer, which is authoritative, still says it."""
        for v in self._version_names():
            path = self.root / v / LINEAGE
            try:
                lineage = atomic.read_json(path)
                status = self._status(v)
                if isinstance(lineage, dict) and lineage.get("status") != status:
                    lineage["status"] = status
                    atomic.write_json(path, lineage)
            except (OSError, ValueError) as exc:
                log.debug("registry: lineage of %s not synced: %s", v, exc)

    def _info(self, version: str) -> VersionInfo:
        try:
            lineage = atomic.read_json(self.root / version / LINEAGE)
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{version}: unreadable {LINEAGE}: {exc}") from exc
        return VersionInfo(
            version=version,
            parent=lineage.get("parent"),
            trigger=str(lineage.get("trigger", "")),
            data_used=dict(lineage.get("data_used") or {}),
            evaluation=dict(lineage.get("evaluation") or {}),
            created_at=float(lineage.get("created_at", 0.0)),
            status=self._status(version),
            promoted=version in self._pointer.promoted,
            current=version == self._pointer.current,
        )

    # -- damage and retention --------------------------------------------------------

    def _problem(self, what: str, reason: str) -> None:
        log.error("registry: %s: %s", what, reason)
        self.problems.append({"what": what, "reason": reason})

    def _last_number(self) -> int:
        """The highest version number ever used here (on disk, in the pointer, or in
        quarantine), so that a number is never given twice."""
        nums = [_version_number(v) for v in self._version_names()]
        p = self._pointer
        nums += [_version_number(v) for v in (*p.promoted, *p.rolled_back) if _VERSION_RE.match(v)]
        qdir = self.root / QUARANTINE
        if qdir.is_dir():
            for q in qdir.iterdir():
                m = _VERSION_RE.match(q.name.split("-", 1)[0])
                if m:
                    nums.append(int(m.group(1)))
        return max(nums, default=0)

    def _quarantine_path(self, path: Path, name: str) -> None:
        qdir = self.root / QUARANTINE
        try:
            qdir.mkdir(exist_ok=True)
            os.rename(path, qdir / f"{name}-{time.time_ns()}")
            atomic.fsync_dir(self.root)
        except OSError as exc:  # cannot move it (read-only disk?): leave it, say so
            log.error("registry: cannot quarantine %s: %s", path, exc)

    def quarantine(self, version: str, reason: str) -> None:
        """Move a damaged version out of the registry (to ``quarantine/``), with why."""
        with self._lock:
            self._problem(version, reason)
            self._quarantine_path(self.root / version, version)
            if self._pointer.current == version:
                self._pointer.current = None

    def _check_version(self, version: str) -> None:
        self.verify(version)
        lineage = atomic.read_json(self.root / version / LINEAGE)
        if not isinstance(lineage, dict) or lineage.get("version") != version:
            raise RegistryError(f"{LINEAGE} does not describe {version}")

    def open_serving(self, prior_folder: str | os.PathLike[str], load: Callable[[str], T]) -> T:
        """Check every version, quarantine the damaged ones, and return ``load(v)`` of
        the version to serve: the served one if sound, else the newest sound version
        that served, else any sound one, else a fresh import of ``prior_folder``. A
        version that ``load`` refuses is quarantined too. Promotes what it serves."""
        with self._lock:
            for v in self._version_names():
                try:
                    self._check_version(v)
                except (RegulatorError, OSError, ValueError) as exc:
                    self.quarantine(v, f"damaged: {exc}")
            p = self._pointer
            names = self._version_names()
            served = [v for v in reversed(names) if v in p.promoted and v not in p.rolled_back]
            others = [v for v in reversed(names) if v not in served and v not in p.rolled_back]
            order = [v for v in [p.current] if v is not None and v in names]
            order += [v for v in served + others if v not in order]
            for v in order:
                try:
                    out = load(v)
                except (RegulatorError, OSError, ValueError, KeyError, TypeError) as exc:
                    self.quarantine(v, f"cannot be loaded: {exc}")
                    continue
                if v != self._pointer.current:
                    if self.problems:
                        log.warning("registry: serving %s instead (degraded)", v)
                    self.promote(v)
                return out
            if names or self.problems:
                log.warning("registry: no sound version; importing the shipped prior again")
            version = self.add(
                prior_folder,
                parent=None,
                trigger="bootstrap",
                data_used={"source": str(prior_folder)},
            )
            self.promote(version)
            return load(version)

    def prune(self, keep_last: int, keep_served: int) -> list[str]:
        """Delete versions beyond the newest ``keep_last``, except the newest
        ``keep_served`` that ever served, the first and the served one; return them."""
        with self._lock:
            names = self._version_names()
            p = self._pointer
            keep = set(names[-keep_last:]) | set(names[:1])
            keep |= set([v for v in names if v in p.promoted][-keep_served:])
            if p.current is not None:
                keep.add(p.current)
            doomed = [v for v in names if v not in keep]
            for v in doomed:  # rename first: a kill mid-delete leaves only debris
                tmp = self.root / f"{atomic.TMP_PREFIX}prune-{v}"
                os.rename(self.root / v, tmp)
                shutil.rmtree(tmp, ignore_errors=True)
            if doomed:
                atomic.fsync_dir(self.root)
                gone = set(doomed)
                self._commit(
                    _Pointer(
                        current=p.current,
                        promoted=[v for v in p.promoted if v not in gone],
                        rolled_back=[v for v in p.rolled_back if v not in gone],
                    )
                )
                log.info(
                    "registry: pruned %d versions (%s … %s)", len(doomed), doomed[0], doomed[-1]
                )
            return doomed


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
