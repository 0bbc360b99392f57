"""A corpus of hostile policy files: each is refused with exit 2 and its reason or field
path, never a traceback or a hang (issue 12: files that crashed ``check-config`` or that
it accepted and ``run`` then crashed on)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from regulator.cli import main

DEEP = 10_000


def _run(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["check-config", str(path)])
    out, err = capsys.readouterr()
    return code, out + err


CORPUS: dict[str, tuple[str, str]] = {
    # name: (file text, fragment the message must hold)
    "deep-flow-yaml": ("a: " + "[" * DEEP + "]" * DEEP + "\n", "nesting deeper than 64"),
    "deep-block-yaml": ("".join(" " * i + f"k{i}:\n" for i in range(1000)), "nesting deeper"),
    "list-as-key": ("? [a, b]\n: 1\n", "found a list as a key"),
    "mapping-as-key": ("{a: 1}: 2\n", "found a dict as a key"),
    "billion-laughs": (
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n"
            for i in range(8)
        ),
        "nodes after expanding aliases",
    ),
    "bad-date": ("device: {id: 2026-13-45}\n", "YAML value error"),
    "huge-int": ("device: {seed: " + "9" * 5000 + "}\n", "YAML value error"),
    "period-inf": ("source: {schedule: {period_s: .inf}}\n", "source.schedule.period_s"),
    "every-inf": (
        "schedules: [{id: s, kind: interval, every_s: .inf, action: alert_only}]\n",
        "schedules.0.every_s",
    ),
    "seed-past-2-63": ("device: {seed: 9223372036854775808}\n", "device.seed"),
    "n-steps-huge": ("model: {n_steps: 100000000}\n", "model.n_steps"),
    "nan-threshold": (
        "rules: [{name: r, condition: {signal: ood_pvalue_below, threshold: .nan},"
        " action: alert_only}]\n",
        "rules.0.condition.threshold",
    ),
    "timeout-huge": ("recalibration: {timeout_s: 1.0e300}\n", "recalibration.timeout_s"),
    "ood-scorer-bogus": ("monitors: {ood_scorer: bogus}\n", "monitors.ood_scorer: unknown OOD"),
    "detector-bogus": ("monitors: {detector: adwin}\n", "monitors.detector: unknown detector"),
    "profile-bogus": ("device: {profile: tpu}\n", "device.profile: unknown chip profile"),
    "family-bogus": ("source: {family: weather}\n", "source.family: unknown task family"),
    "python-tag": ("a: !!python/object/apply:os.system ['true']\n", "YAML error"),
    "not-utf8": ("device: {id: \udcff}\n", "not UTF-8"),
    "recursive-alias": ("a: &a [*a]\n", "YAML error"),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_yaml_exits_2_with_reason(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, fragment = CORPUS[name]
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    code, message = _run(path, capsys)
    assert code == 2, message
    assert fragment in message, message
    assert "Traceback" not in message


def test_deep_toml_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * DEEP + "]" * DEEP + "\n")
    code, message = _run(path, capsys)
    assert code == 2 and "nesting" in message, message


def test_oversize_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 200_000)
    code, message = _run(path, capsys)
    assert code == 2 and "a policy file is at most" in message, message


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_device_files_exit_2(device: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, message = _run(Path(device), capsys)
    assert code == 2 and "not a regular file (a character device)" in message, message


def test_directory_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, message = _run(tmp_path, capsys)
    assert code == 2 and "a directory" in message, message


def test_fifo_exits_2_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(main(["check-config", str(fifo)])))
    worker.daemon = True
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "check-config blocked on a FIFO"
    assert result == [2]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["period-inf", "seed-past-2-63", "n-steps-huge"])
def test_run_refuses_what_used_to_crash_it(name: str, tmp_path: Path) -> None:
    """``regulator run --config`` on files that check-config used to accept: exit 2
    with the field, before anything starts."""
    text, fragment = CORPUS[name]
    path = tmp_path / "p.yaml"
    path.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "regulator.cli", "run", "--config", str(path), "--port", "0",
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
