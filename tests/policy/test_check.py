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


@pytest.mark.parametrize(
    "body",
    [
        "label_free_refresh_factor: 1.0",  # must grow the window
        "label_free_refresh_factor: 17",
        "label_free_refresh_factor: .nan",
        "label_free_refresh_max_samples: 31",  # below the first refresh's window
        "label_free_refresh_max_samples: 4096",  # more than the inputs kept
    ],
)
def test_label_free_refresh_bounds_return_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"recalibration: {{{body}}}\n", encoding="utf-8")
    assert check_config(path) == 2
    field = body.split(":")[0]
    assert f"recalibration.{field}:" in capsys.readouterr().err


def test_label_free_refresh_is_off_by_default(tmp_path: Path) -> None:
    from regulator.policy.model import Policy

    cfg = Policy().recalibration
    assert cfg.label_free_refresh_factor is None and cfg.label_free_refresh_max_samples == 1024
    path = tmp_path / "ok.yaml"
    path.write_text(
        "recalibration: {label_free_refresh_factor: 2, label_free_refresh_max_samples: 2048}\n",
        encoding="utf-8",
    )
    assert check_config(path) == 0


def test_a_prior_or_replay_file_that_is_not_there_returns_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "b2.dat"
    data.write_text("1;1:0.5\n", encoding="utf-8")
    path = tmp_path / "p.yaml"
    path.write_text(
        f"model: {{prior: {tmp_path / 'no-prior'}}}\n"
        f"source: {{kind: replay, files: [{data}, {tmp_path / 'absent.dat'}]}}\n",
        encoding="utf-8",
    )
    assert check_config(path) == 2
    err = capsys.readouterr().err
    assert "model.prior:" in err and "no such folder" in err
    assert "source.files.1:" in err and "source.files.0" not in err


def test_a_folder_that_is_not_a_model_is_refused_as_prior(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    path = tmp_path / "p.yaml"
    path.write_text(f"model: {{prior: {tmp_path / 'empty'}}}\n", encoding="utf-8")
    assert check_config(path) == 2
    assert "not a model folder" in capsys.readouterr().err


def test_a_token_file_not_there_yet_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a container secret is mounted at run time: the policy is still valid
    path = tmp_path / "p.yaml"
    path.write_text(f"http: {{token_file: {tmp_path / 'secret'}}}\n", encoding="utf-8")
    assert check_config(path) == 0
    out, err = capsys.readouterr()
    assert "valid policy" in out and "warning: http.token_file:" in err
