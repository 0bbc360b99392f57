"""systemd's sd_notify protocol, without libsystemd.

When systemd starts us with ``Type=notify`` it sets ``NOTIFY_SOCKET`` to a datagram
socket (a path, or ``@name`` in the abstract namespace); each message is newline
separated ``KEY=value`` lines. With ``WatchdogSec=`` it also sets ``WATCHDOG_USEC``
(and ``WATCHDOG_PID``): we must send ``WATCHDOG=1`` more often than that, in practice
every half interval. Without ``NOTIFY_SOCKET`` every call is a no-op returning False.

>>> n = Notifier(env={})
>>> n.enabled, n.ready(), watchdog_interval_s(env={"WATCHDOG_USEC": "20000000"})
(False, False, 20.0)
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

__all__ = ["Notifier", "watchdog_interval_s"]

log = logging.getLogger(__name__)


def _address(path: str) -> str | bytes:
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    return path


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """systemd's watchdog timeout in seconds, or None when no watchdog is asked of this
    process (unset, invalid, or ``WATCHDOG_PID`` naming another process)."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring invalid WATCHDOG_USEC=%r", usec)
        return None
    return value / 1e6 if value > 0 else None


class Notifier:
    """Sends sd_notify messages to ``NOTIFY_SOCKET`` (read once, from ``env``).

    Send failures are logged, never raised: systemd going away must not stop the daemon.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET") or None
        if path is not None and not (path.startswith("/") or path.startswith("@")):
            log.warning("ignoring NOTIFY_SOCKET=%r: not a path or an abstract name", path)
            path = None
        self.socket_path = path
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def notify(self, *lines: str) -> bool:
        """Send one message made of ``KEY=value`` lines; True if it was sent."""
        if self.socket_path is None:
            return False
        for line in lines:
            if "\n" in line or "=" not in line:
                raise ValueError(f"sd_notify line must be one KEY=value line, got {line!r}")
        payload = "\n".join(lines).encode()
        with self._lock:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                    s.connect(_address(self.socket_path))
                    s.sendall(payload)
            except OSError as exc:
                log.warning("sd_notify to %s failed: %s", self.socket_path, exc)
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        lines = ["READY=1", f"MAINPID={os.getpid()}"]
        if status:
            lines.append(f"STATUS={_one_line(status)}")
        return self.notify(*lines)

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def reloading(self) -> bool:
        """Tell systemd a reload started (``Type=notify-reload`` wants the timestamp);
        send :meth:`ready` when it is done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> bool:
        lines = ["STOPPING=1"]
        if status:
            lines.append(f"STATUS={_one_line(status)}")
        return self.notify(*lines)


def _one_line(text: str) -> str:
    return " ".join(text.split())
