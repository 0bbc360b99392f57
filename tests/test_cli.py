"""The ``regulator`` command line: help, check-config and its exit codes (DESIGN §3)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from regulator.cli import main

REPO = Path(__file__).resolve().parents[1]
POLICIES = sorted((REPO / "deploy" / "policies").glob("*.yaml"))
COMMANDS = (
    "run", "check-config", "train", "evaluate", "replay", "fleet", "export-nir", "report",
)  # fmt: skip


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in a real process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "regulator.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_help_lists_every_command() -> None:
    res = _cli("--help")
    assert res.returncode == 0, res.stderr
    for cmd in COMMANDS:
        assert cmd in res.stdout


def test_version_flag_prints_the_installed_versions() -> None:
    res = _cli("--version")
    assert res.returncode == 0, res.stderr
    want = (
        f"regulator {metadata.version('regulator')} (python {platform.python_version()}, "
        f"torch {metadata.version('torch')}, norse {metadata.version('norse')})"
    )
    assert res.stdout.strip() == want


@pytest.mark.parametrize("cmd", COMMANDS)
def test_each_command_has_help(cmd: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: regulator" in capsys.readouterr().out


def test_no_command_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_shipped_policies_are_valid(policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(policy)]) == 0
    assert "valid policy" in capsys.readouterr().out


def test_shipped_policies_exist() -> None:
    assert {p.name for p in POLICIES} >= {"default.yaml", "gas-drift-replay.yaml"}


@pytest.mark.parametrize(
    ("text", "paths"),
    [
        ("recalibration:\n  k_shot: 0\n", ["recalibration.k_shot"]),
        ("http:\n  portt: 80\n", ["http.portt"]),
        (
            "source:\n  kind: simulated\n  rate_hz: -1\nrules:\n  - name: x\n"
            "    condition: {signal: accuracy_below, threshold: 2}\n    action: explode\n",
            ["source.rate_hz", "rules.0.condition.threshold", "rules.0.action"],
        ),
        ("http:\n  token: hunter2\n", ["http.token"]),
    ],
)
def test_bad_policy_exits_2_with_every_field_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, paths: list[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    for p in paths:
        assert p in err, err
    assert "hunter2" not in err


def test_bad_policy_through_the_installed_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("monitors:\n  silent_threshold: 0.9\n  saturated_threshold: 0.1\n")
    res = subprocess.run(
        [sys.executable, "-m", "regulator.cli", "check-config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert "monitors" in res.stderr and "silent_threshold" in res.stderr


@pytest.mark.parametrize("text", ["a: [1, 2\n", "- just\n- a list\n", "x: 1\nx: 2\n"])
def test_unparsable_policy_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert main(["check-config", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err


def test_missing_policy_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_evaluate_scores_a_later_recording_holding_a_gas_batch_1_lacks(tmp_path: Path) -> None:
    """``evaluate --batches`` scores any later recording of the array (batchN.dat), and
    a gas that batch 1 lacks is one more class for every peer, not a crash."""
    src = REPO / "data" / "gas-drift"
    b1 = (src / "batch1.dat").read_text().splitlines()[:300]  # gases 1-4 only
    assert {ln.split(";")[0] for ln in b1} == {"1", "2", "3", "4"}
    (tmp_path / "batch1.dat").write_text("\n".join(b1) + "\n")
    later = (src / "batch3.dat").read_text().splitlines()[::8]  # gases 1-5
    (tmp_path / "batch7.dat").write_text("\n".join(later) + "\n")
    out = tmp_path / "gas.json"
    r = subprocess.run(
        [sys.executable, "-m", "regulator.cli", "evaluate", str(REPO / "models" / "gas-drift"),
         "--gas-drift", str(tmp_path), "--batches", "7", "--draws", "2", "--shots", "3",
         "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| method | batch 7 | mean |" in r.stdout
    import json

    table = json.loads(out.read_text())["table"]["7"]
    assert {"labelfree_fewshot", "lr_source", "mlp_renorm", "ncm"} <= set(table)
    for name in ("labelfree_fewshot", "lr_source", "mlp_renorm", "ncm"):
        assert 0.0 <= table[name]["metric"]["mean"] <= 1.0


def test_evaluate_gas_drift_defaults_to_the_protocols_five_shots(tmp_path: Path) -> None:
    """The README's ``evaluate --gas-drift`` runs the 5-labels-per-gas protocol the cards
    and the headline table report, not the first of the K-shot defaults (1)."""
    src = REPO / "data" / "gas-drift"
    (tmp_path / "batch1.dat").write_text((src / "batch1.dat").read_text())
    (tmp_path / "batch3.dat").write_text(
        "\n".join((src / "batch3.dat").read_text().splitlines()[::10]) + "\n"
    )
    out = tmp_path / "gas.json"
    r = subprocess.run(
        [sys.executable, "-m", "regulator.cli", "evaluate", str(REPO / "models" / "gas-drift"),
         "--gas-drift", str(tmp_path), "--batches", "3", "--draws", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    table = json.loads(out.read_text())
    assert table["k_per_class"] == 5
    assert table["table"]["3"]["fewshot"]["labels"] == 5 * len(
        table["table"]["3"]["classes_present"]
    )
    bad = subprocess.run(
        [sys.executable, "-m", "regulator.cli", "evaluate", str(REPO / "models" / "gas-drift"),
         "--gas-drift", str(tmp_path), "--batches", "3", "--shots", "1", "5"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "one --shots K" in bad.stderr


def _replay(tmp_path: Path, report: Path) -> subprocess.CompletedProcess[str]:
    """The README's replay of the shipped gas policy, on batch 2's first 60 rows."""
    rows = (REPO / "data" / "gas-drift" / "batch2.dat").read_text().splitlines()[:60]
    data = tmp_path / "batch2.dat"
    data.write_text("\n".join(rows) + "\n")
    return subprocess.run(
        [sys.executable, "-m", "regulator.cli", "replay", "--config",
         str(REPO / "deploy" / "policies" / "gas-drift-replay.yaml"), "--data", str(data),
         "--report", str(report), "--no-progress"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip


def test_replay_makes_the_folder_of_its_report(tmp_path: Path) -> None:
    report = tmp_path / "not" / "yet" / "replay.json"
    r = _replay(tmp_path, report)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(report.read_text())["segments"][0]["samples"] == 60


@pytest.mark.parametrize("where", ["under_a_file", "a_folder"])
def test_replay_refuses_a_report_it_cannot_write_before_it_runs(tmp_path: Path, where: str) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    report = tmp_path / "file" / "r.json" if where == "under_a_file" else tmp_path / "folder"
    r = _replay(tmp_path, report)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "--report" in r.stderr and "Traceback" not in r.stderr
    assert "samples" not in r.stdout  # refused before the replay ran


def test_evaluate_refuses_an_out_it_cannot_write_before_it_evaluates(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    r = subprocess.run(
        [sys.executable, "-m", "regulator.cli", "evaluate", str(REPO / "models" / "gas-drift"),
         "--gas-drift", str(REPO / "data" / "gas-drift"), "--out",
         str(tmp_path / "file" / "gas.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert "--out" in r.stderr and "Traceback" not in r.stderr
    assert "| method |" not in r.stdout


def test_run_with_a_prior_that_is_not_there_exits_2_before_it_starts(tmp_path: Path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"model: {{prior: {tmp_path / 'no-prior'}}}\n", encoding="utf-8")
    r = subprocess.run(
        [sys.executable, "-m", "regulator.cli", "run", "--config", str(cfg), "--state-dir",
         str(tmp_path / "state")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert "model.prior:" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "state").exists()  # nothing started, nothing written
