"""The ``/metrics`` endpoint: an ASGI app that renders a registry's exposition in a
worker thread, concurrent scrapes sharing one render."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.concurrency import run_in_threadpool

__all__ = ["MetricsApp", "SharedRender"]

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]


class SharedRender:
    """One exposition format of one registry, rendered once for every scrape waiting."""

    def __init__(self, render: Callable[[], bytes]) -> None:
        self._render = render
        self._cond = threading.Condition()
        self._busy = False
        self._started = 0  # renders started
        self._done = 0  # the number of the latest render that ended
        self._body: bytes | None = None  # its output (None: it raised)

    def fresh(self) -> bytes:
        """Output of a render that started after this call (blocking; a worker thread):
        scrapes that arrive during a render share the next one, so a burst of scrapes
        costs two renders, and no answer predates its request."""
        with self._cond:
            want = self._started + 1
            while self._done < want:
                if not self._busy:
                    self._busy, self._started = True, self._started + 1
                    number = self._started
                    break
                self._cond.wait()
            else:
                if self._body is None:
                    raise RuntimeError("the metrics render this scrape waited for failed")
                return self._body
        body: bytes | None = None
        try:
            body = self._render()
            return body
        finally:
            with self._cond:
                self._busy, self._done, self._body = False, number, body
                self._cond.notify_all()


class MetricsApp:
    """The ``/metrics`` ASGI app (what prometheus-client's ``make_asgi_app`` serves:
    text or OpenMetrics by ``Accept``, gzip by ``Accept-Encoding``, ``name[]``
    filters), rendered in a worker thread rather than on the event loop, with
    concurrent scrapes sharing one render: under load a render on the loop held every
    other request back (55 % of the loop's time with 8 clients, bench/load.py)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._renders: dict[str, SharedRender] = {}
        self._lock = threading.Lock()

    def _shared(self, accept: str) -> tuple[Callable[[], bytes], str]:
        encoder, content_type = choose_encoder(accept)
        with self._lock:
            render = self._renders.get(content_type)
            if render is None:
                render = SharedRender(lambda: encoder(self._registry))
                self._renders[content_type] = render
        return render.fresh, content_type

    async def __call__(
        self,
        scope: _Scope,
        receive: Callable[[], Awaitable[_Message]],
        send: Callable[[_Message], Awaitable[None]],
    ) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        accept = headers.get("accept", "")
        names = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("name[]")
        if names:  # a filtered scrape is rare: rendered for itself
            encoder, content_type = choose_encoder(accept)
            registry = self._registry.restricted_registry(names)
            render: Callable[[], bytes] = lambda: encoder(registry)  # noqa: E731
        else:
            render, content_type = self._shared(accept)
        zipped = "gzip" in headers.get("accept-encoding", "")

        def body() -> bytes:
            out = render()
            return gzip.compress(out, compresslevel=1) if zipped else out

        out = await run_in_threadpool(body)
        reply = [(b"content-type", content_type.encode("latin-1"))]
        if zipped:
            reply.append((b"content-encoding", b"gzip"))
        await send({"type": "http.response.start", "status": 200, "headers": reply})
        await send({"type": "http.response.body", "body": out})
