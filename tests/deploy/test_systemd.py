"""deploy/systemd/regulator.service: systemd's own analyser accepts the unit and rates
its sandbox at an exposure of 2.0 or lower."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "regulator.service"
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not on PATH (Debian package: systemd)",
)


def _directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_unit_has_the_required_settings() -> None:
    d = _directives()
    expected = {
        "Type": "notify",
        "Restart": "on-failure",
        "DynamicUser": "yes",
        "StateDirectory": "regulator",
        "ConfigurationDirectory": "regulator",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
    }
    for key, value in expected.items():
        assert d.get(key) == [value], key
    assert "WatchdogSec" in d
    assert d["LoadCredential"][0].startswith("token:")
    assert "RestrictAddressFamilies" in d and "SystemCallFilter" in d
    (exec_start,) = d["ExecStart"]
    assert " run " in exec_start and "--state-dir /var/lib/regulator" in exec_start


@needs_analyze
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists on *this* machine. The unit names
    # /usr/local/bin/regulator, where the install notes put it, which a test machine
    # need not have. So verify a copy whose ExecStart names this Python interpreter
    # instead: every other line is checked exactly as shipped.
    text = UNIT.read_text()
    program = re.search(r"^ExecStart=(\S+)", text, re.MULTILINE)
    assert program is not None
    if not Path(program.group(1)).exists():
        text = text.replace(f"ExecStart={program.group(1)}", f"ExecStart={sys.executable}", 1)
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # A clean verify prints nothing about our unit.
    assert UNIT.name not in result.stderr, result.stderr


@needs_analyze
def test_security_exposure_at_most_two() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= MAX_EXPOSURE, result.stdout
