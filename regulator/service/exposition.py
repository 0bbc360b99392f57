"""The ``/metrics`` endpoint: an ASGI app that renders a registry's exposition in a
worker thread, concurrent scrapes sharing one render, and scrapes within a short age
bound sharing the latest one."""

from __future__ import annotations

import gzip
import threading
import time
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
        self._body_t = -float("inf")  # when that render started (monotonic s)

    def recent(self, max_age_s: float) -> bytes | None:
        """The latest render's output if it started at most ``max_age_s`` seconds ago,
        else None (does not block: the event loop asks this first)."""
        if max_age_s <= 0:
            return None
        t_request = time.monotonic()
        with self._cond:
            if self._body is not None and t_request - self._body_t <= max_age_s:
                return self._body
        return None

    def fresh(self, max_age_s: float = 0.0) -> bytes:
        """Output of a render that started after this call, or at most ``max_age_s``
        seconds before it (blocking; a worker thread): scrapes that arrive during a
        render share the next one, so a burst of scrapes costs two renders."""
        recent = self.recent(max_age_s)
        if recent is not None:
            return recent
        with self._cond:
            want = self._started + 1
            while self._done < want:
                if not self._busy:
                    self._busy, self._started = True, self._started + 1
                    number, t_start = self._started, time.monotonic()
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
                self._body_t = t_start
                self._cond.notify_all()


class MetricsApp:
    """The ``/metrics`` ASGI app (what prometheus-client's ``make_asgi_app`` serves:
    text or OpenMetrics by ``Accept``, gzip by ``Accept-Encoding``, ``name[]``
    filters), rendered in a worker thread rather than on the event loop, with
    concurrent scrapes sharing one render: under load a render on the loop held every
    other request back (55 % of the loop's time with 8 clients, bench/load.py).

    ``max_age_s``: a scrape may get the latest render if it started at most that long
    before the scrape arrived, unless the scrape asks ``Cache-Control: no-cache``. A
    render costs about 1 ms of the serving process's interpreter; clients polling
    ``/metrics`` in a loop took a third of it from the samples (bench/load.py). 0:
    every scrape renders."""

    def __init__(self, registry: CollectorRegistry, max_age_s: float = 0.0) -> None:
        if not max_age_s >= 0.0:
            raise ValueError(f"max_age_s must be >= 0, got {max_age_s}")
        self._registry = registry
        self._max_age_s = max_age_s
        self._zipped: tuple[bytes, bytes] = (b"", b"")  # the latest (render, its gzip)
        self._renders: dict[str, SharedRender] = {}
        self._lock = threading.Lock()

    def _shared(self, accept: str) -> tuple[SharedRender, str]:
        encoder, content_type = choose_encoder(accept)
        with self._lock:
            render = self._renders.get(content_type)
            if render is None:
                render = SharedRender(lambda: encoder(self._registry))
                self._renders[content_type] = render
        return render, content_type

    async def __call__(
        self,
        scope: _Scope,
        receive: Callable[[], Awaitable[_Message]],
        send: Callable[[_Message], Awaitable[None]],
    ) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        accept = headers.get("accept", "")
        names = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("name[]")
        no_cache = "no-cache" in headers.get("cache-control", "").lower()
        max_age_s = 0.0 if no_cache else self._max_age_s
        recent: bytes | None = None
        if names:  # a filtered scrape is rare: rendered for itself
            encoder, content_type = choose_encoder(accept)
            registry = self._registry.restricted_registry(names)
            render: Callable[[float], bytes] = lambda _age: encoder(registry)  # noqa: E731
        else:
            shared, content_type = self._shared(accept)
            render, recent = shared.fresh, shared.recent(max_age_s)
        zipped = "gzip" in headers.get("accept-encoding", "")

        def body(out: bytes | None) -> bytes:
            if out is None:
                out = render(max_age_s)
            if not zipped:
                return out
            plain, packed = self._zipped
            if out is not plain:  # a shared render is compressed once
                packed = gzip.compress(out, compresslevel=1)
                self._zipped = (out, packed)
            return packed

        if recent is not None and (not zipped or recent is self._zipped[0]):
            out = body(recent)  # nothing left to compute: answered on the loop
        else:
            out = await run_in_threadpool(body, recent)
        reply = [(b"content-type", content_type.encode("latin-1"))]
        if zipped:
            reply.append((b"content-encoding", b"gzip"))
        await send({"type": "http.response.start", "status": 200, "headers": reply})
        await send({"type": "http.response.body", "body": out})
