"""``regulator replay`` shows progress bars on a terminal, and none when piped."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np

from regulator.tasks.formats import save_npz
from tests.service.conftest import policy_dict, write_policy


def _recordings(tmp_path: Path) -> list[str]:
    from regulator.tasks.base import make_family

    fam = make_family("nanosensor")
    rng = np.random.default_rng(0)
    files = []
    for i in range(2):
        x, y = fam.sample(fam.nominal_environment(), 60, rng)
        files.append(str(tmp_path / f"seg{i}.npz"))
        save_npz(files[-1], x, y)
    return files


def _argv(tiny_prior: Path, tmp_path: Path, report: Path) -> list[str]:
    cfg = write_policy(tmp_path / "policy.yaml", policy_dict(tiny_prior))
    return [
        sys.executable, "-m", "regulator.cli", "replay", "--config", str(cfg),
        "--data", *_recordings(tmp_path), "--report", str(report),
    ]  # fmt: skip


def test_progress_bars_on_a_terminal(tiny_prior: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 120 columns
    proc = subprocess.Popen(
        _argv(tiny_prior, tmp_path, report), stdout=follower, stderr=follower, close_fds=True
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(120) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "read: 100%" in screen and "2/2" in screen, screen[-2000:]
    assert "replay: 100%" in screen and "120/120" in screen, screen[-2000:]
    assert "seg1.npz accuracy" in screen
    assert json.loads(report.read_text())["samples"] == 120


def test_no_bars_when_output_is_not_a_terminal(tiny_prior: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    res = subprocess.run(
        _argv(tiny_prior, tmp_path, report), capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "replay:" not in res.stderr and "%|" not in res.stderr
    assert "seg0.npz: 60 samples" in res.stdout and report.exists()
