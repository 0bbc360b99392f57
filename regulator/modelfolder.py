"""Model folders: a directory of files plus ``manifest.json`` holding their checksums.

``manifest.json`` is ``{"format": 1, "files": {relative posix name: sha256 hex}, ...}``
where the other keys are free metadata (prior name, architecture, card...). Only the
files listed are checked; other files (a registry's ``lineage.json``) may sit beside them.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp()) / "m"
>>> d.mkdir()
>>> _ = (d / "weights.bin").write_bytes(b"abc")
>>> m = write_manifest(d, {"prior": "demo"})
>>> m["files"]["weights.bin"][:12], m["prior"]
('ba7816bf8f01', 'demo')
>>> verify(d)["format"]
1
>>> _ = (d / "weights.bin").write_bytes(b"abd")
>>> verify(d)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
regulator.errors.ChecksumError: weights.bin: sha256 mismatch in ...
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from regulator import atomic
from regulator.errors import ChecksumError, ModelFolderError
from regulator.turns import checkpoint, fsync

__all__ = [
    "FORMAT",
    "MANIFEST",
    "copy_verified",
    "read_manifest",
    "sha256_file",
    "verify",
    "write_manifest",
]

MANIFEST = "manifest.json"
FORMAT = 1
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _payload_files(folder: Path, exclude: frozenset[str]) -> list[str]:
    names = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.is_symlink():
            continue
        rel = p.relative_to(folder).as_posix()
        if (
            rel == MANIFEST
            or rel in exclude
            or any(part.startswith(atomic.TMP_PREFIX) for part in PurePosixPath(rel).parts)
        ):
            continue
        names.append(rel)
    return names


def write_manifest(
    folder: str | os.PathLike[str],
    metadata: Mapping[str, Any] | None = None,
    *,
    exclude: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Checksum every regular file under ``folder`` (except ``exclude``) and write the
    manifest atomically; return it. ``metadata`` may not use the keys format or files."""
    root = Path(folder)
    if not root.is_dir():
        raise ModelFolderError(f"{root}: not a directory")
    meta = dict(metadata or {})
    clash = {"format", "files"} & meta.keys()
    if clash:
        raise ValueError(f"metadata may not set reserved keys {sorted(clash)}")
    files = {rel: sha256_file(root / rel) for rel in _payload_files(root, exclude)}
    manifest: dict[str, Any] = {**meta, "format": FORMAT, "files": files}
    atomic.write_json(root / MANIFEST, manifest)
    return manifest


def _safe_rel(rel: object, folder: Path) -> str:
    if not isinstance(rel, str) or not rel:
        raise ModelFolderError(f"{folder / MANIFEST}: bad file name {rel!r}")
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or "\\" in rel:
        raise ModelFolderError(f"{folder / MANIFEST}: file name {rel!r} leaves the folder")
    return rel


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and structurally check a folder's manifest (checksums are not verified)."""
    root = Path(folder)
    path = root / MANIFEST
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ModelFolderError(f"{root}: no {MANIFEST}") from None
    except (OSError, ValueError) as exc:
        raise ModelFolderError(f"{path}: unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFolderError(f"{path}: not a format-{FORMAT} manifest")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ModelFolderError(f"{path}: 'files' must be a non-empty mapping")
    for rel, digest in files.items():
        _safe_rel(rel, root)
        if not isinstance(digest, str) or len(digest) != 64:
            raise ModelFolderError(f"{path}: bad sha256 for {rel!r}")
    return manifest


def verify(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Check every file listed in the manifest; return the manifest.

    Raises :class:`ChecksumError` naming the first file whose bytes differ, and
    :class:`ModelFolderError` for a missing folder, manifest or file.
    """
    root = Path(folder)
    manifest = read_manifest(root)
    for rel, digest in manifest["files"].items():
        path = root / rel
        if not path.is_file():
            raise ModelFolderError(f"{rel}: listed in the manifest but missing from {root}")
        actual = sha256_file(path)
        if actual != digest:
            raise ChecksumError(
                f"{rel}: sha256 mismatch in {root} (manifest {digest[:12]}…, file {actual[:12]}…)"
            )
    return manifest


def _copy_file(src: Path, dst: Path, digest: str | None, rel: str, root: Path) -> None:
    """Copy one file, fsynced; with ``digest``, check the bytes as they are read (one
    read, one hash: the bytes checked are the bytes written)."""
    h = hashlib.sha256() if digest is not None else None
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not src.is_file():
        raise ModelFolderError(f"{rel}: listed in the manifest but missing from {root}")
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(_CHUNK):
            if h is not None:
                h.update(chunk)
            fout.write(chunk)
        fout.flush()
        fsync(fout.fileno())
    checkpoint()  # a version's files are copied in turns with serving
    if h is not None and digest is not None and (actual := h.hexdigest()) != digest:
        raise ChecksumError(
            f"{rel}: sha256 mismatch in {root} (manifest {digest[:12]}…, file {actual[:12]}…)"
        )


def copy_verified(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, trusted: bool = False
) -> dict[str, Any]:
    """Copy the files a model folder's manifest lists (and its manifest) to ``dst``,
    checking each file's sha256 as it is read: ChecksumError/ModelFolderError on damage.

    ``trusted``: ``src`` is a folder this process has just written, its manifest made
    from these very bytes, so they are copied without hashing them again.

    The copy is built in a temporary directory beside ``dst``, fsynced, then renamed
    into place, so ``dst`` either does not exist or is complete. ``dst`` must not
    exist yet. Returns the manifest.
    """
    source, target = Path(src), Path(dst)
    manifest = read_manifest(source)
    if target.exists():
        raise ModelFolderError(f"{target}: already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=atomic.TMP_PREFIX + target.name + ".", dir=target.parent))
    try:
        for rel, digest in manifest["files"].items():
            _copy_file(source / rel, tmp / rel, None if trusted else digest, rel, source)
        _copy_file(source / MANIFEST, tmp / MANIFEST, None, MANIFEST, source)
        for d in sorted({(tmp / rel).parent for rel in manifest["files"]}, reverse=True):
            atomic.fsync_dir(d)
        os.rename(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    atomic.fsync_dir(target.parent)
    return manifest
