"""The daemon speaks systemd's notify protocol (Type=notify, WatchdogSec) to a real socket."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from tests.service.conftest import DaemonProcess, policy_dict, write_policy


@pytest.mark.e2e
def test_ready_watchdog_status_and_stopping(tiny_prior: Path, tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.5)
    cfg = write_policy(tmp_path / "policy.yaml", policy_dict(tiny_prior))
    # WatchdogSec=2: the daemon must ping at least every second.
    env = {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "2000000"}
    d = DaemonProcess(cfg, tmp_path / "state", tmp_path / "daemon.log", extra_env=env)
    messages: list[str] = []

    def drain(until: float) -> None:
        while time.monotonic() < until:
            try:
                messages.extend(sock.recv(4096).decode().splitlines())
            except TimeoutError:
                continue

    try:
        d.start()
        d.wait_ready()
        drain(time.monotonic() + 4.0)
        assert "READY=1" in messages
        pings = [m for m in messages if m == "WATCHDOG=1"]
        assert len(pings) >= 3, messages  # at least every second over four seconds
        assert any(m.startswith("STATUS=") for m in messages)
        d.signal(signal.SIGTERM)
        assert d.wait(30) == 0
        drain(time.monotonic() + 0.5)
        assert "STOPPING=1" in messages
    finally:
        d.close()
        sock.close()
