"""``check_config``: exit status and where its messages go."""

from __future__ import annotations

from pathlib import Path

import pytest

from regulator.policy.check import check_config

REPO = Path(__file__).resolve().parents[2]


def test_valid_file_returns_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config(REPO / "deploy" / "policies" / "default.yaml") == 0
    out, err = capsys.readouterr()
    assert "valid policy" in out and err == ""


def test_invalid_file_returns_2_with_every_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("http: {port: -1}\nrecalibration: {k_shot: 0}\n", encoding="utf-8")
    assert check_config(path) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "http.port:" in err and "recalibration.k_shot:" in err


def test_missing_file_returns_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config(tmp_path / "absent.yaml") == 2
    assert "cannot read policy file" in capsys.readouterr().err
