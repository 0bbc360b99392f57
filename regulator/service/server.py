"""Serving the API: uvicorn in a background thread of the daemon, which owns signals."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

__all__ = ["ServerThread", "serve"]

log = logging.getLogger(__name__)


# -- serving -----------------------------------------------------------------------------


class ServerThread(uvicorn.Server):
    """A uvicorn server running in a background thread; ``port`` is the bound port."""

    thread: threading.Thread

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the daemon owns signals, uvicorn installs none

    @property
    def port(self) -> int:
        for server in self.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("server is not listening")

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the server to exit, wait up to ``timeout`` s, then force it; True if the
        thread ended."""
        self.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.force_exit = True
            self.thread.join(timeout)
        return not self.thread.is_alive()


def serve(
    app: FastAPI,
    host: str,
    port: int,
    *,
    startup_timeout: float = 10.0,
    access_log: bool = False,
) -> ServerThread:
    """Start uvicorn on ``host:port`` (0 picks a free port) in a daemon thread and wait
    until it listens. OSError if it cannot bind. Stop it with ``server.stop()``."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=access_log,
        lifespan="off",
        ws="none",
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    server = ServerThread(config)

    def run() -> None:
        try:
            server.run()
        except SystemExit:  # uvicorn exits on bind errors; it has logged why
            log.debug("HTTP server thread exited during startup")

    server.thread = threading.Thread(target=run, name="regulator-http", daemon=True)
    server.thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not server.thread.is_alive():
            raise OSError(f"HTTP server could not start on {host}:{port} (see the log)")
        if time.monotonic() > deadline:
            server.stop(1.0)
            raise OSError(f"HTTP server did not start on {host}:{port} in {startup_timeout} s")
        time.sleep(0.01)
    log.info("HTTP API listening on %s:%d", host, server.port)
    return server
