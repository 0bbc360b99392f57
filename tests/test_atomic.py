"""Atomic writes and model folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from regulator import atomic, modelfolder
from regulator.errors import ChecksumError, ModelFolderError


def test_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "f.txt"
    atomic.write_text(p, "old")
    atomic.write_text(p, "new")
    assert p.read_text() == "new"
    assert [q.name for q in tmp_path.iterdir()] == ["f.txt"]


def test_write_json_refuses_nan_and_keeps_old(tmp_path: Path) -> None:
    p = tmp_path / "f.json"
    atomic.write_json(p, {"a": 1})
    with pytest.raises(ValueError):
        atomic.write_json(p, {"a": math.nan})
    assert json.loads(p.read_text()) == {"a": 1}
    assert [q.name for q in tmp_path.iterdir()] == ["f.json"]


def test_write_bytes_mode(tmp_path: Path) -> None:
    p = tmp_path / "secret"
    atomic.write_bytes(p, b"x", mode=0o600)
    assert p.stat().st_mode & 0o777 == 0o600


def _model(folder: Path, payload: bytes = b"weights") -> Path:
    folder.mkdir(parents=True)
    (folder / "weights.safetensors").write_bytes(payload)
    (folder / "sub").mkdir()
    (folder / "sub" / "card.md").write_text("# card\n")
    modelfolder.write_manifest(folder, {"prior": "demo"})
    return folder


def test_manifest_lists_every_file(tmp_path: Path) -> None:
    m = _model(tmp_path / "m")
    man = modelfolder.verify(m)
    assert set(man["files"]) == {"weights.safetensors", "sub/card.md"}
    assert man["format"] == 1 and man["prior"] == "demo"


def test_manifest_reserved_keys(tmp_path: Path) -> None:
    m = _model(tmp_path / "m")
    with pytest.raises(ValueError, match="reserved"):
        modelfolder.write_manifest(m, {"files": {}})


def test_corruption_names_the_file(tmp_path: Path) -> None:
    m = _model(tmp_path / "m")
    (m / "sub" / "card.md").write_text("# tampered\n")
    with pytest.raises(ChecksumError, match=r"sub/card\.md"):
        modelfolder.verify(m)


def test_missing_file_and_manifest(tmp_path: Path) -> None:
    m = _model(tmp_path / "m")
    (m / "weights.safetensors").unlink()
    with pytest.raises(ModelFolderError, match=r"weights\.safetensors"):
        modelfolder.verify(m)
    (m / "manifest.json").unlink()
    with pytest.raises(ModelFolderError, match=r"no manifest\.json"):
        modelfolder.verify(m)


def test_manifest_path_traversal_refused(tmp_path: Path) -> None:
    m = _model(tmp_path / "m")
    man = json.loads((m / "manifest.json").read_text())
    man["files"]["../outside"] = "0" * 64
    (m / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ModelFolderError, match="leaves the folder"):
        modelfolder.verify(m)


def test_copy_verified(tmp_path: Path) -> None:
    m = _model(tmp_path / "m")
    (m / "stray.txt").write_text("not listed")
    modelfolder.copy_verified(m, tmp_path / "out" / "copy")
    dst = tmp_path / "out" / "copy"
    assert modelfolder.verify(dst)["prior"] == "demo"
    assert not (dst / "stray.txt").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["copy"]
    with pytest.raises(ModelFolderError, match="already exists"):
        modelfolder.copy_verified(m, dst)


def test_copy_of_corrupt_folder_leaves_nothing(tmp_path: Path) -> None:
    m = _model(tmp_path / "m")
    (m / "weights.safetensors").write_bytes(b"bad")
    (tmp_path / "out").mkdir()
    with pytest.raises(ChecksumError):
        modelfolder.copy_verified(m, tmp_path / "out" / "copy")
    assert list((tmp_path / "out").iterdir()) == []
