"""The :class:`Registry`: add, promote, roll back, open after damage, prune."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from regulator import atomic, modelfolder
from regulator.errors import ModelFolderError, RegistryError, RegulatorError
from regulator.registry.faultpoint import reached
from regulator.registry.lineage import (
    LINEAGE,
    Status,
    VersionInfo,
    check_lineage,
    new_lineage,
    read_info,
    sync_status,
)
from regulator.registry.names import is_version, version_name, version_number
from regulator.registry.pointer import POINTER, Pointer, read_pointer, write_pointer
from regulator.registry.quarantine import move_to_quarantine, quarantined_numbers
from regulator.registry.recovery import serving_order
from regulator.registry.retention import to_prune

if TYPE_CHECKING:
    from regulator.service.storage import DiskGuard

__all__ = ["Registry"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Registry:
    """Versioned, crash-safe model store. Thread-safe; one process per ``root``.

    ``clock`` gives ``created_at`` in seconds (simulated time in replay); it only stamps
    lineage, so a wall clock that jumps changes no decision here.
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
        self._fresh: set[str] = set()  # added trusted by this object, not yet promoted
        self.root.mkdir(parents=True, exist_ok=True)
        self._clean_leftovers()
        self._pointer = self._open_pointer()
        self._sync_lineage_status()

    # -- reading ---------------------------------------------------------------------

    def current(self) -> str | None:
        """The version being served, or None before bootstrap."""
        with self._lock:
            return self._pointer.current

    def path(self, version: str) -> Path:
        """The folder of ``version``; RegistryError if it does not exist."""
        version_number(version)
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
        *,
        trusted: bool = False,
    ) -> str:
        """Copy a model folder in as the next version (not yet served), checking its
        checksums as it is copied.

        ``trusted``: this process has just written ``src_folder`` (a recalibration's
        candidate), its manifest made from those bytes, so they are hashed neither here
        nor by the :meth:`promote` that follows: from the candidate's save to its
        serving, its bytes are hashed once. :meth:`open_serving` and :meth:`rollback`
        check versions from disk.

        The version appears by one directory rename of a complete staging folder.
        Raises ChecksumError/ModelFolderError if ``src_folder`` is damaged, RegistryError
        for an unknown parent.
        """
        with self._lock:
            if parent is not None:
                self.path(parent)
            version = version_name(self._last_number() + 1)
            lineage = new_lineage(version, parent, trigger, data_used, evaluation, self._clock())
            if self._guard is not None:
                self._guard.check(_folder_bytes(Path(src_folder)), "version")
            stage = self.root / f"{atomic.TMP_PREFIX}stage-{version}"
            if stage.exists():
                shutil.rmtree(stage)
            try:
                reached("add.start")
                modelfolder.copy_verified(src_folder, stage, trusted=trusted)
                reached("add.copied")
                atomic.write_json(stage / LINEAGE, lineage)
                reached("add.staged")
                os.rename(stage, self.root / version)
                reached("add.renamed")
            except BaseException:
                with contextlib.suppress(OSError):
                    shutil.rmtree(stage)
                raise
            atomic.fsync_dir(self.root)
            if trusted:
                self._fresh.add(version)
            log.info("registry: added %s (parent %s, trigger %s)", version, parent, trigger)
            return version

    def promote(self, version: str) -> None:
        """Serve ``version`` from now on, after checking its checksums (unless this
        object has just added it from a trusted folder: see :meth:`add`)."""
        with self._lock:
            if version in self._fresh:
                self._fresh.discard(version)
            else:
                self.verify(version)
            p = self._pointer
            self._commit(
                Pointer(
                    current=version,
                    promoted=p.promoted + ((version,) if version not in p.promoted else ()),
                    rolled_back=tuple(v for v in p.rolled_back if v != version),
                )
            )
            log.info("registry: serving %s", version)

    def rollback(self) -> str:
        """Mark the current version rolled back and serve the newest older good version
        that was served before (skipping damaged ones: its checksums are checked here,
        so the caller need not hash its bytes again); return it.

        RegistryError if there is none.
        """
        with self._lock:
            p = self._pointer
            if p.current is None:
                raise RegistryError("nothing is served yet; nothing to roll back")
            cur = version_number(p.current)
            candidates = sorted(
                (
                    v
                    for v in p.promoted
                    if v not in p.rolled_back
                    and version_number(v) < cur
                    and (self.root / v).is_dir()
                ),
                key=version_number,
                reverse=True,
            )
            for target in candidates:
                try:
                    self.verify(target)
                except ModelFolderError as exc:
                    log.warning("registry: cannot roll back to %s: %s", target, exc)
                    continue
                old = p.current
                self._commit(replace(p, current=target, rolled_back=(*p.rolled_back, old)))
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
            version = names[-1] if names else self._import(prior_folder)
            self.promote(version)
            return version

    # -- damage and retention --------------------------------------------------------

    def quarantine(self, version: str, reason: str) -> None:
        """Move a damaged version out of the registry (to ``quarantine/``), with why."""
        with self._lock:
            self._problem(version, reason)
            self._fresh.discard(version)
            move_to_quarantine(self.root, self.root / version, version)
            if self._pointer.current == version:
                self._pointer = replace(self._pointer, current=None)

    def open_serving(self, prior_folder: str | os.PathLike[str], load: Callable[[str], T]) -> T:
        """Check every version, quarantine the damaged ones, and return ``load(v)`` of
        the version to serve (:func:`~regulator.registry.recovery.serving_order`), else
        of a fresh import of ``prior_folder``. A version that ``load`` refuses is
        quarantined too. Promotes what it serves. ``load`` is only given a version whose
        checksums were just checked, so it need not hash its bytes again."""
        with self._lock:
            for v in self._version_names():
                try:
                    self.verify(v)
                    check_lineage(self.root / v)
                except (RegulatorError, OSError, ValueError) as exc:
                    self.quarantine(v, f"damaged: {exc}")
            names = self._version_names()
            for v in serving_order(names, self._pointer):
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
            version = self._import(prior_folder)
            self.promote(version)
            return load(version)

    def prune(self, keep_last: int, keep_served: int) -> list[str]:
        """Delete versions beyond the newest ``keep_last``, except the newest
        ``keep_served`` that ever served, the first and the served one; return them."""
        with self._lock:
            p = self._pointer
            doomed = to_prune(self._version_names(), p, keep_last, keep_served)
            for v in doomed:  # rename first: a kill mid-delete leaves only debris
                tmp = self.root / f"{atomic.TMP_PREFIX}prune-{v}"
                os.rename(self.root / v, tmp)
                reached("prune.renamed")
                shutil.rmtree(tmp, ignore_errors=True)
            if doomed:
                atomic.fsync_dir(self.root)
                reached("prune.deleted")
                gone = set(doomed)
                self._fresh -= gone
                self._commit(
                    Pointer(
                        current=p.current,
                        promoted=tuple(v for v in p.promoted if v not in gone),
                        rolled_back=tuple(v for v in p.rolled_back if v not in gone),
                    )
                )
                log.info(
                    "registry: pruned %d versions (%s … %s)", len(doomed), doomed[0], doomed[-1]
                )
            return doomed

    # -- internals -------------------------------------------------------------------

    def _import(self, prior_folder: str | os.PathLike[str]) -> str:
        return self.add(
            prior_folder, parent=None, trigger="bootstrap", data_used={"source": str(prior_folder)}
        )

    def _version_names(self) -> list[str]:
        names = [p.name for p in self.root.iterdir() if p.is_dir() and is_version(p.name)]
        return sorted(names, key=version_number)

    def _clean_leftovers(self) -> None:
        for p in self.root.iterdir():
            if p.name.startswith(atomic.TMP_PREFIX):
                log.warning("registry: removing leftover of an interrupted write: %s", p.name)
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()

    def _open_pointer(self) -> Pointer:
        """The committed pointer; an unreadable one is quarantined, a dangling one
        forgotten (``open_serving`` then chooses what to serve)."""
        try:
            ptr = read_pointer(self.root)
        except RegistryError as exc:
            self._problem(POINTER, str(exc))
            move_to_quarantine(self.root, self.root / POINTER, POINTER)
            return Pointer()
        if ptr.current is not None and not (self.root / ptr.current).is_dir():
            self._problem(POINTER, f"points at missing version {ptr.current!r}")
            ptr = replace(ptr, current=None)
        return ptr

    def _commit(self, new: Pointer) -> None:
        old = self._pointer
        write_pointer(self.root, new)
        self._pointer = new
        # Only the versions whose status this commit changed: reading every lineage on
        # each promote grew with the registry (and held the recalibration thread, and
        # the GIL, for it). A crash between the pointer and a lineage is repaired by the
        # full sync when the registry is opened.
        changed = set(old.rolled_back) ^ set(new.rolled_back)
        sync_status(self.root, sorted(v for v in changed if (self.root / v).is_dir()), self._status)

    def _status(self, version: str) -> Status:
        return "rolled_back" if version in self._pointer.rolled_back else "good"

    def _sync_lineage_status(self) -> None:
        sync_status(self.root, self._version_names(), self._status)

    def _info(self, version: str) -> VersionInfo:
        p = self._pointer
        return read_info(
            self.root / version,
            status=self._status(version),
            promoted=version in p.promoted,
            current=version == p.current,
        )

    def _problem(self, what: str, reason: str) -> None:
        log.error("registry: %s: %s", what, reason)
        self.problems.append({"what": what, "reason": reason})

    def _last_number(self) -> int:
        """The highest version number ever used here (on disk, in the pointer, or in
        quarantine), so that a number is never given twice."""
        p = self._pointer
        nums = [version_number(v) for v in self._version_names()]
        nums += [version_number(v) for v in (*p.promoted, *p.rolled_back) if is_version(v)]
        return max(nums + quarantined_numbers(self.root), default=0)


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
