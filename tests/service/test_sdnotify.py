"""sd_notify against a real AF_UNIX datagram socket, path and abstract namespace."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from regulator.service.sdnotify import Notifier, watchdog_interval_s


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    p = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(p)
    s.settimeout(5)
    yield s, p
    s.close()


def recv(s: socket.socket) -> list[str]:
    return s.recv(4096).decode().split("\n")


def test_messages_reach_a_path_socket(path_socket: tuple[socket.socket, str]) -> None:
    s, p = path_socket
    n = Notifier(env={"NOTIFY_SOCKET": p})
    assert n.enabled
    assert n.ready(status="serving v000001")
    assert recv(s) == ["READY=1", f"MAINPID={os.getpid()}", "STATUS=serving v000001"]
    assert n.watchdog()
    assert recv(s) == ["WATCHDOG=1"]
    assert n.status("recalibrating\nnow")
    assert recv(s) == ["STATUS=recalibrating now"]
    assert n.reloading()
    msg = recv(s)
    assert msg[0] == "RELOADING=1" and msg[1].startswith("MONOTONIC_USEC=")
    assert n.stopping()
    assert recv(s) == ["STOPPING=1"]


def test_abstract_namespace() -> None:
    name = f"regulator-test-{uuid.uuid4().hex}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.bind(b"\0" + name.encode())
        s.settimeout(5)
        assert Notifier(env={"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert recv(s) == ["WATCHDOG=1"]
    finally:
        s.close()


def test_unset_is_noop() -> None:
    n = Notifier(env={})
    assert not n.enabled
    assert not n.ready() and not n.watchdog() and not n.stopping()


def test_missing_socket_is_logged_not_raised(tmp_path: Path) -> None:
    n = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.watchdog() is False


def test_bad_line_refused(path_socket: tuple[socket.socket, str]) -> None:
    _, p = path_socket
    with pytest.raises(ValueError, match="KEY=value"):
        Notifier(env={"NOTIFY_SOCKET": p}).notify("READY")


def test_watchdog_interval() -> None:
    assert watchdog_interval_s(env={}) is None
    assert watchdog_interval_s(env={"WATCHDOG_USEC": "5000000"}) == 5.0
    assert (
        watchdog_interval_s(env={"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": str(os.getpid())})
        == 5.0
    )
    assert (
        watchdog_interval_s(env={"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": str(os.getpid() + 1)})
        is None
    )
    assert watchdog_interval_s(env={"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval_s(env={"WATCHDOG_USEC": "0"}) is None
