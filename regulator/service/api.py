"""The HTTP API (DESIGN §3): FastAPI routes over a :class:`RuntimeAPI`, plus uvicorn.

Reading routes are open; mutating routes need ``Authorization: Bearer <token>``
(constant-time comparison). With no token configured, mutating routes answer 503 and
say why: they are refused, never open. The order of checks on a POST is: body size
(413), token (401/503), then body validation (422 with the reasons), then the runtime
(409 when it refuses, e.g. nothing to roll back). A bad body never yields a 5xx.

Bodies are frozen pydantic models that forbid unknown keys, except Alertmanager's
webhook payload: its schema is Alertmanager's, so unknown keys are ignored and the
version is checked instead.

The runtime's methods are synchronous; they are called in a worker thread so a slow
disk (label fsync, registry copy) never blocks the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Generator, MutableMapping
from typing import Annotated, Any, Literal, Protocol, TypeVar

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, make_asgi_app
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from regulator.errors import InputError, RegulatorError
from regulator.service.metrics import Metrics

__all__ = [
    "Alert",
    "AlertmanagerPayload",
    "FeedbackItem",
    "FeedbackRequest",
    "RecalibrateRequest",
    "RuntimeAPI",
    "Sample",
    "SamplesRequest",
    "ServerThread",
    "build_app",
    "serve",
]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_ITEMS = 10_000
"""Most samples or labels in one request."""
MAX_VALUES = 1_000_000
"""Most numbers in one sample's ``x``."""

_ID = Annotated[str, Field(min_length=1, max_length=200)]
_Number = int | float
X = list[list[float]] | list[float]
"""A sample's input: channels × time steps ``[C][L]``, or one value per channel ``[C]``."""


# -- request bodies ----------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sample(_Body):
    """One input sample pushed for inference (``source: http``). ``t`` in seconds."""

    sample_id: _ID | None = None
    x: X
    t: float | None = None
    env: dict[str, Any] | None = None


class SamplesRequest(_Body):
    samples: list[Any] = Field(min_length=1, max_length=MAX_ITEMS)


class FeedbackItem(_Body):
    """A label for an earlier sample (``sample_id`` only), or a labelled calibration
    sample (with ``x``). ``y`` is a class index or a regression target."""

    sample_id: _ID | None = None
    y: _Number
    x: X | None = None
    t: float | None = None
    env: dict[str, Any] | None = None


class FeedbackRequest(_Body):
    items: list[FeedbackItem] = Field(min_length=1, max_length=MAX_ITEMS)


class RecalibrateRequest(_Body):
    reason: str | None = Field(default=None, max_length=500)


class Alert(BaseModel):
    """One alert of Alertmanager's webhook (payload version 4)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str | None = None  # camelCase: Alertmanager's field names
    endsAt: str | None = None
    generatorURL: str | None = None
    fingerprint: str | None = Field(default=None, max_length=200)

    def key(self) -> str:
        """The fingerprint, or a stable hash of the labels when there is none."""
        if self.fingerprint:
            return self.fingerprint
        canon = json.dumps(self.labels, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]


class AlertmanagerPayload(BaseModel):
    """Alertmanager's webhook body, version "4"."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupKey: str = ""
    truncatedAlerts: int = 0
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[Alert] = Field(max_length=MAX_ITEMS)


# -- the runtime seen from the API -------------------------------------------------------


class RuntimeAPI(Protocol):
    """What the HTTP API needs from the daemon's runtime. Methods are called from worker
    threads, concurrently with the main loop: they must be thread-safe and quick
    (schedule work, do not do it). Raising ``InputError`` gives 422, any other
    ``RegulatorError`` (``RegistryError``, ``ConfigError``...) gives 409 with the message.
    """

    def healthy(self) -> bool:
        """The main loop ticked recently."""
        ...

    def ready(self) -> bool:
        """Model loaded, policy valid, scheduler running."""
        ...

    def status(self) -> dict[str, Any]:
        """JSON-ready: model version, monitors, last recalibrations, pending jobs."""
        ...

    def models(self) -> list[dict[str, Any]]:
        """Registry versions with lineage (``VersionInfo.as_dict()``)."""
        ...

    def request_recalibration(self, trigger: str, key: str | None = None) -> dict[str, Any]:
        """Schedule a recalibration now; idempotent while one is pending. Returns e.g.
        ``{"scheduled": bool, "pending": bool, "job": id}``."""
        ...

    def alert_action(self, labels: dict[str, str]) -> str | None:
        """The action a firing alert with these labels asks for (policy's ``alerts``
        section), or None to ignore it."""
        ...

    def handle_alert(self, action: str, key: str) -> dict[str, Any]:
        """Carry out ``action`` for the alert ``key`` (a recalibration is deduplicated
        by ``key`` while pending)."""
        ...

    def recalibration_pending(self, key: str | None = None) -> bool:
        """True while a recalibration (requested with ``key``, or any when None) is
        queued or running; the API uses it to drop duplicate alerts."""
        ...

    def rollback(self) -> dict[str, Any]:
        """Serve the previous good version; RegistryError if there is none."""
        ...

    def feedback(self, items: list[FeedbackItem]) -> dict[str, Any]:
        """Persist labels (before returning); e.g. ``{"accepted": n, "unknown_ids": [...]}``."""
        ...

    def push_samples(self, items: list[Sample]) -> dict[str, Any]:
        """Enqueue validated samples; ``{"accepted": n, "rejected": [{"index", "reason"}]}``.
        ConfigError when the source is not ``http``."""
        ...

    def record_event(self, kind: str, **fields: Any) -> None:
        """Append to the event log (the API records every alert it handles)."""
        ...


# -- validation helpers ------------------------------------------------------------------


def check_x(x: Any) -> tuple[int, ...]:
    """Shape of a sample input, after checking it is ``[C]`` or rectangular ``[C][L]``
    of finite real numbers; InputError with the reason otherwise.

    >>> check_x([[0.0, 1.0], [2.0, 3.0]]), check_x([1, 2, 3])
    ((2, 2), (3,))
    >>> check_x([[1.0], [2.0, 3.0]])
    Traceback (most recent call last):
    ...
    regulator.errors.InputError: bad_shape: rows of x differ in length (1 and 2)
    """
    if not isinstance(x, list) or not x:
        raise InputError("bad_shape: x must be a non-empty list")
    if all(isinstance(row, list) for row in x):
        width = len(x[0])
        if width == 0:
            raise InputError("bad_shape: rows of x must be non-empty")
        if len(x) * width > MAX_VALUES:
            raise InputError(f"bad_shape: x has more than {MAX_VALUES} values")
        for row in x:
            if len(row) != width:
                raise InputError(f"bad_shape: rows of x differ in length ({width} and {len(row)})")
            _check_numbers(row)
        return (len(x), width)
    if any(isinstance(v, list) for v in x):
        raise InputError("bad_shape: x mixes numbers and lists")
    if len(x) > MAX_VALUES:
        raise InputError(f"bad_shape: x has more than {MAX_VALUES} values")
    _check_numbers(x)
    return (len(x),)


def _check_numbers(values: list[Any]) -> None:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise InputError(f"bad_value: x holds a non-number {type(v).__name__}")
        if not math.isfinite(v):
            raise InputError("non_finite: x holds NaN or infinity")


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def _detail(status: int, detail: Any, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], raw: bytes, empty_ok: bool = False) -> M | JSONResponse:
    if not raw.strip():
        if empty_ok:
            return model()
        return _detail(422, "request body is empty; a JSON object is required")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return _detail(422, f"body is not valid JSON: {exc}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return _detail(422, _errors(exc))


# -- ASGI pieces -------------------------------------------------------------------------


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with 413: at once from Content-Length,
    or while streaming a chunked body. The accepted body is buffered and replayed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _send_json(send, 400, "invalid Content-Length")
                return
            if size > self.max_bytes:
                await _send_json(send, 413, f"body of {size} bytes exceeds {self.max_bytes}")
                return
        chunks: list[bytes] = []
        total = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await _send_json(send, 413, f"body exceeds {self.max_bytes} bytes")
                return
            chunks.append(body)
            more = bool(message.get("more_body", False))
        buffered = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": buffered, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _AsgiEndpoint:
    """Lets a Route hand a request to a plain ASGI function (``/metrics`` without the
    trailing slash a Mount would redirect to)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


# -- the app -----------------------------------------------------------------------------


def build_app(
    runtime: RuntimeAPI,
    metrics_registry: CollectorRegistry,
    token_provider: Callable[[], str | None],
    max_body_bytes: int,
    metrics: Metrics | None = None,
) -> FastAPI:
    """The daemon's FastAPI app. ``token_provider`` is called per request (the token
    file may change); ``metrics``, when given, counts alerts received and samples the
    API rejects."""
    if max_body_bytes <= 0:
        raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
    app = FastAPI(title="regulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    metrics_app = make_asgi_app(registry=metrics_registry)
    app.router.routes.append(Route("/metrics", endpoint=_AsgiEndpoint(metrics_app)))
    app.mount("/metrics", metrics_app)

    def authorize(request: Request) -> JSONResponse | None:
        token = token_provider()
        if not token:
            return _detail(
                503,
                "no API token is configured (REGULATOR_TOKEN or the policy's token source); "
                "mutating routes are disabled",
            )
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return _detail(401, "missing bearer token", **{"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            return _detail(
                401, "invalid bearer token", **{"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        return None

    async def call(fn: Callable[[], Any]) -> Any:
        try:
            return await run_in_threadpool(fn)
        except InputError as exc:
            return _detail(422, str(exc))
        except RegulatorError as exc:
            return _detail(409, str(exc))

    def reject(reason: str, n: int = 1) -> None:
        if metrics is not None:
            metrics.samples_rejected.labels(reason=reason).inc(n)

    @app.get("/healthz")
    async def healthz() -> Response:
        ok = await run_in_threadpool(runtime.healthy)
        return JSONResponse({"status": "ok" if ok else "unhealthy"}, 200 if ok else 503)

    @app.get("/readyz")
    async def readyz() -> Response:
        ok = await run_in_threadpool(runtime.ready)
        return JSONResponse({"status": "ready" if ok else "not ready"}, 200 if ok else 503)

    @app.get("/v1/status")
    async def status() -> Response:
        return JSONResponse(await run_in_threadpool(runtime.status))

    @app.get("/v1/models")
    async def models() -> Response:
        return JSONResponse({"versions": await run_in_threadpool(runtime.models)})

    @app.post("/v1/recalibrate")
    async def recalibrate(request: Request) -> Response:
        if (denied := authorize(request)) is not None:
            return denied
        body = _parse(RecalibrateRequest, await request.body(), empty_ok=True)
        if isinstance(body, JSONResponse):
            return body
        result = await call(lambda: runtime.request_recalibration("http", "http"))
        return result if isinstance(result, Response) else JSONResponse(result, 202)

    @app.post("/v1/rollback")
    async def rollback(request: Request) -> Response:
        if (denied := authorize(request)) is not None:
            return denied
        raw = await request.body()
        if raw.strip() and raw.strip() != b"{}":
            return _detail(422, "rollback takes no body (or {})")
        result = await call(runtime.rollback)
        return result if isinstance(result, Response) else JSONResponse(result)

    @app.post("/v1/alerts")
    async def alerts(request: Request) -> Response:
        if (denied := authorize(request)) is not None:
            return denied
        payload = _parse(AlertmanagerPayload, await request.body())
        if isinstance(payload, JSONResponse):
            return payload
        result = await call(lambda: _handle_alerts(runtime, payload, metrics))
        return result if isinstance(result, Response) else JSONResponse(result)

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Response:
        if (denied := authorize(request)) is not None:
            return denied
        body = _parse(FeedbackRequest, await request.body())
        if isinstance(body, JSONResponse):
            return body
        for i, item in enumerate(body.items):
            if item.x is None and item.sample_id is None:
                return _detail(422, f"items[{i}]: needs sample_id (a label) or x (a sample)")
            if item.x is not None:
                try:
                    check_x(item.x)
                except InputError as exc:
                    return _detail(422, f"items[{i}].x: {exc}")
            if not math.isfinite(item.y):
                return _detail(422, f"items[{i}].y: must be finite")
        result = await call(lambda: runtime.feedback(list(body.items)))
        return result if isinstance(result, Response) else JSONResponse(result)

    @app.post("/v1/samples")
    async def samples(request: Request) -> Response:
        if (denied := authorize(request)) is not None:
            return denied
        envelope = _parse(SamplesRequest, await request.body())
        if isinstance(envelope, JSONResponse):
            reject("malformed_body")
            return envelope
        good: list[Sample] = []
        index: list[int] = []
        rejected: list[dict[str, Any]] = []
        for i, raw in enumerate(envelope.samples):
            try:
                sample = Sample.model_validate(raw)
                check_x(raw["x"])  # the raw list: pydantic would have coerced "1" or True
            except ValidationError as exc:
                rejected.append({"index": i, "reason": "invalid", "detail": _errors(exc)})
                continue
            except InputError as exc:
                reason = str(exc).split(":", 1)[0]
                rejected.append({"index": i, "reason": reason, "detail": str(exc)})
                continue
            good.append(sample)
            index.append(i)
        for r in rejected:
            reject(r["reason"])
        if not good:
            return _detail(422, {"accepted": 0, "rejected": rejected})
        result = await call(lambda: runtime.push_samples(good))
        if isinstance(result, Response):
            return result
        out = dict(result)
        for r in out.get("rejected", []) or []:  # runtime indices are into ``good``
            if isinstance(r, dict) and isinstance(r.get("index"), int):
                r["index"] = index[r["index"]]
        out["rejected"] = sorted(
            [*rejected, *(out.get("rejected") or [])], key=lambda r: r.get("index", 0)
        )
        return JSONResponse(out)

    return app


def _handle_alerts(
    runtime: RuntimeAPI, payload: AlertmanagerPayload, metrics: Metrics | None
) -> dict[str, Any]:
    triggered: list[str] = []
    duplicates: list[str] = []
    ignored = 0
    seen: set[str] = set()
    for alert in payload.alerts:
        if metrics is not None:
            metrics.alerts_received.labels(status=alert.status).inc()
        key = alert.key()
        name = alert.labels.get("alertname", "")
        wanted = runtime.alert_action(alert.labels)
        if alert.status != "firing" or wanted is None:
            ignored += 1
            action = "ignored"
        elif key in seen or runtime.recalibration_pending(key):
            duplicates.append(key)
            action = "duplicate"
        else:
            result = runtime.handle_alert(wanted, key)
            triggered.append(key)
            action = wanted if result.get("scheduled", True) else "already_pending"
        seen.add(key)
        runtime.record_event(
            "alert", alertname=name, fingerprint=key, status=alert.status, action=action
        )
    return {
        "received": len(payload.alerts),
        "triggered": triggered,
        "deduplicated": duplicates,
        "ignored": ignored,
    }


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
