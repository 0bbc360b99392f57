"""The HTTP API (DESIGN §3): FastAPI routes over a :class:`RuntimeAPI`, plus uvicorn.

Reading routes are open; mutating routes need ``Authorization: Bearer <token>``
(constant-time comparison). With no token configured, mutating routes answer 503 and
say why: they are refused, never open. The order of checks on a POST is: body size
(413), token (401/503), JSON depth (400) and numbers (422) before parsing, then the
body's schema (422 with the reasons), then the runtime (409 when it refuses, e.g.
nothing to roll back; 507 when the state directory cannot store the labels now). A bad
body never yields a 5xx; a method the contract does not list is a 405. Every refusal
carries a ``reason`` of :data:`regulator.errors.RejectReason` and is counted in
``regulator_requests_rejected_total{reason}``; a 5xx, should one happen, in
``regulator_http_server_errors_total``.

Bodies are the frozen, strict models of :mod:`regulator.service.bodies`; their
schemas and examples are the request bodies of ``/openapi.json`` (served with ``/docs``
when ``docs`` is on: by default, when the daemon binds a loopback address).

The runtime's methods are synchronous; they are called in a worker thread so a slow
disk (label fsync, registry copy) never blocks the event loop.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from regulator.errors import (
    REJECT_REASONS,
    InputError,
    RegulatorError,
    RejectReason,
    StorageFullError,
)
from regulator.service.bodies import (
    Alert,
    AlertmanagerPayload,
    FeedbackItem,
    FeedbackRequest,
    RecalibrateRequest,
    Sample,
    SamplesRequest,
    SamplesResponse,
    check_x,
)
from regulator.service.edge import ASGIApp, BodyLimit, ServerErrorGuard, parse_json
from regulator.service.exposition import MetricsApp
from regulator.service.metrics import Metrics
from regulator.service.openapi import body_doc, openapi_builder
from regulator.service.runtime_api import RuntimeAPI
from regulator.service.server import ServerThread, serve

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


# -- responses ---------------------------------------------------------------------------


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


class _Refusal(JSONResponse):
    """An error answer ``{"detail", "reason"}`` that remembers its reason."""

    def __init__(self, status: int, detail: Any, reason: RejectReason, **headers: str) -> None:
        super().__init__(
            {"detail": detail, "reason": reason}, status_code=status, headers=headers or None
        )
        self.reason: RejectReason = reason


_detail = _Refusal


M = TypeVar("M", bound=BaseModel)


class _AsgiEndpoint:
    """Lets a Route hand a request to a plain ASGI function (``/metrics`` without the
    trailing slash a Mount would redirect to, and for GET only)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


# -- the app -----------------------------------------------------------------------------


def build_app(
    runtime: RuntimeAPI,
    metrics_registry: CollectorRegistry,
    token_provider: Callable[[], str | None],
    max_body_bytes: int,
    metrics: Metrics | None = None,
    *,
    max_json_depth: int = 32,
    docs: bool = False,
    metrics_max_age_s: float = 0.0,
) -> FastAPI:
    """The daemon's FastAPI app. ``token_provider`` is called per request (the token
    file may change); ``metrics``, when given, counts alerts received, samples and
    requests refused, and server errors; ``docs`` serves ``/openapi.json`` and ``/docs``;
    ``metrics_max_age_s`` bounds the age of a shared ``/metrics`` render (see MetricsApp)."""
    if max_body_bytes <= 0:
        raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
    app = FastAPI(
        title="regulator",
        version=_version(),
        description="Meta-regulator daemon for neuromorphic chips (DESIGN.md §3).",
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.openapi = openapi_builder(app)  # type: ignore[method-assign]

    def refused(reason: RejectReason) -> None:
        if metrics is not None:
            metrics.requests_rejected.labels(reason=reason).inc()

    def server_error() -> None:
        if metrics is not None:
            metrics.http_server_errors.inc()

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, on_reject=refused)
    app.add_middleware(  # outermost
        ServerErrorGuard, on_error=server_error, on_no_route=lambda: refused("no_route")
    )
    metrics_app = _AsgiEndpoint(MetricsApp(metrics_registry, metrics_max_age_s))
    for path in ("/metrics", "/metrics/"):
        app.router.routes.append(
            Route(path, endpoint=metrics_app, methods=["GET"], include_in_schema=False)
        )

    def refuse(status: int, detail: Any, reason: RejectReason, **headers: str) -> JSONResponse:
        refused(reason)
        return _detail(status, detail, reason, **headers)

    def authorize(request: Request) -> JSONResponse | None:
        token = token_provider()
        if not token:
            return refuse(
                503,
                "no API token is configured (REGULATOR_TOKEN or the policy's token source); "
                "mutating routes are disabled",
                "no_token",
            )
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return refuse(
                401, "missing bearer token", "unauthorized", **{"WWW-Authenticate": "Bearer"}
            )
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            return refuse(
                401,
                "invalid bearer token",
                "unauthorized",
                **{"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return None

    def parse(model: type[M], raw: bytes, empty_ok: bool = False) -> M | JSONResponse:
        if not raw.strip():
            if empty_ok:
                return model()
            return refuse(422, "request body is empty; a JSON object is required", "malformed_body")
        try:
            data = parse_json(raw, max_json_depth)
        except InputError as exc:
            return refuse(400 if exc.reason == "too_deep" else 422, str(exc), exc.reason)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            return refuse(422, _errors(exc), "malformed_body")

    async def call(fn: Callable[[], Any]) -> Any:
        try:
            return await run_in_threadpool(fn)
        except InputError as exc:
            return refuse(422, str(exc), exc.reason)
        except StorageFullError as exc:
            return refuse(507, str(exc), "disk_full")
        except RegulatorError as exc:
            return refuse(409, str(exc), "conflict")

    def reject_samples(reason: RejectReason, n: int = 1) -> None:
        if metrics is not None:
            metrics.samples_rejected.labels(reason=reason).inc(n)

    @app.get("/healthz")
    async def healthz() -> Response:
        """200 while the main loop ticks, else 503."""
        ok = await run_in_threadpool(runtime.healthy)
        return JSONResponse({"status": "ok" if ok else "unhealthy"}, 200 if ok else 503)

    @app.get("/readyz")
    async def readyz() -> Response:
        """200 once the model is loaded, the policy valid and the scheduler running."""
        ok = await run_in_threadpool(runtime.ready)
        return JSONResponse({"status": "ready" if ok else "not ready"}, 200 if ok else 503)

    @app.get("/v1/status")
    async def status() -> Response:
        """Model version, monitors, last recalibrations, pending jobs, degraded state."""
        return JSONResponse(await run_in_threadpool(runtime.status))

    @app.get("/v1/models")
    async def models() -> Response:
        """Registry versions with their lineage."""
        return JSONResponse({"versions": await run_in_threadpool(runtime.models)})

    @app.post("/v1/recalibrate", status_code=202, openapi_extra=body_doc(RecalibrateRequest))
    async def recalibrate(request: Request) -> Response:
        """Schedule a recalibration now (idempotent while one is pending)."""
        if (denied := authorize(request)) is not None:
            return denied
        body = parse(RecalibrateRequest, await request.body(), empty_ok=True)
        if isinstance(body, JSONResponse):
            return body
        result = await call(lambda: runtime.request_recalibration("http", "http"))
        return result if isinstance(result, Response) else JSONResponse(result, 202)

    @app.post("/v1/rollback", openapi_extra=body_doc(None, "409"))
    async def rollback(request: Request) -> Response:
        """Serve the previous good version; 409 when there is none."""
        if (denied := authorize(request)) is not None:
            return denied
        raw = await request.body()
        if raw.strip() and raw.strip() != b"{}":
            return refuse(422, "rollback takes no body (or {})", "malformed_body")
        result = await call(runtime.rollback)
        return result if isinstance(result, Response) else JSONResponse(result)

    @app.post("/v1/alerts", openapi_extra=body_doc(AlertmanagerPayload))
    async def alerts(request: Request) -> Response:
        """Alertmanager's webhook (payload version 4)."""
        if (denied := authorize(request)) is not None:
            return denied
        payload = parse(AlertmanagerPayload, await request.body())
        if isinstance(payload, JSONResponse):
            return payload
        result = await call(lambda: _handle_alerts(runtime, payload, metrics))
        return result if isinstance(result, Response) else JSONResponse(result)

    @app.post("/v1/feedback", openapi_extra=body_doc(FeedbackRequest, "507"))
    async def feedback(request: Request) -> Response:
        """Labels for earlier samples or labelled samples, durable before the answer.
        Items the served model cannot take come back in ``rejected``; 422 if none is
        accepted, 507 if the state disk cannot store them now (nothing was stored)."""
        if (denied := authorize(request)) is not None:
            return denied
        body = parse(FeedbackRequest, await request.body())
        if isinstance(body, JSONResponse):
            return body
        for i, item in enumerate(body.items):
            if item.x is None and item.sample_id is None:
                return refuse(
                    422, f"items[{i}]: needs sample_id (a label) or x (a sample)", "malformed_body"
                )
            if item.x is not None:
                try:
                    check_x(item.x)
                except InputError as exc:
                    return refuse(422, f"items[{i}].x: {exc}", exc.reason)
        result = await call(lambda: runtime.feedback(list(body.items)))
        if isinstance(result, Response):
            return result
        rejected = result.get("rejected") or []
        if isinstance(rejected, list) and rejected and not result.get("accepted"):
            first = rejected[0].get("reason")
            refused(cast(RejectReason, first) if first in REJECT_REASONS else "malformed_body")
            return JSONResponse({**result, "detail": "no item accepted"}, 422)
        return JSONResponse(result)

    @app.post("/v1/samples", openapi_extra=body_doc(SamplesRequest, "409", answer=SamplesResponse))
    async def samples(request: Request) -> Response:
        """Samples for the ``http`` source; each is checked on its own. The answer
        (:class:`SamplesResponse`) carries their predictions once they are served."""
        if (denied := authorize(request)) is not None:
            return denied
        envelope = parse(SamplesRequest, await request.body())
        if isinstance(envelope, JSONResponse):
            reject_samples(envelope.reason if isinstance(envelope, _Refusal) else "malformed_body")
            return envelope
        good: list[Sample] = []
        index: list[int] = []
        rejected: list[dict[str, Any]] = []
        for i, raw in enumerate(envelope.samples):
            try:
                if isinstance(raw, dict) and "x" in raw:
                    check_x(raw["x"])  # first: the precise reason (bad_value, bad_shape…)
                sample = Sample.model_validate(raw)
            except InputError as exc:
                rejected.append({"index": i, "reason": exc.reason, "detail": str(exc)})
                continue
            except ValidationError as exc:
                rejected.append({"index": i, "reason": "malformed_body", "detail": _errors(exc)})
                continue
            good.append(sample)
            index.append(i)
        for r in rejected:
            reject_samples(r["reason"])
        if not good:
            refused(rejected[0]["reason"])
            return _detail(422, {"accepted": 0, "rejected": rejected}, rejected[0]["reason"])
        result = await call(lambda: runtime.push_samples(good, envelope.wait))
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


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("regulator")
    except Exception:  # not installed: a source checkout
        return "0"


def _handle_alerts(
    runtime: RuntimeAPI, payload: AlertmanagerPayload, metrics: Metrics | None
) -> dict[str, Any]:
    """Act on each firing alert at most once per payload and action: a payload of
    thousands of alerts asks the runtime once per action and writes its events in one
    batch (one fsync), so it takes milliseconds, not one fsync per alert."""
    triggered: list[str] = []
    duplicates: list[str] = []
    ignored = 0
    seen: set[str] = set()
    done: set[str] = set()  # actions already carried out (or refused) for this payload
    events: list[tuple[str, dict[str, Any]]] = []
    for alert in payload.alerts:
        if metrics is not None:
            metrics.alerts_received.labels(status=alert.status).inc()
        key = alert.key()
        name = alert.labels.get("alertname", "")
        wanted = runtime.alert_action(alert.labels)
        if alert.status != "firing" or wanted is None:
            ignored += 1
            action = "ignored"
        elif key in seen or wanted in done or runtime.recalibration_pending(key):
            duplicates.append(key)
            action = "duplicate"
        else:
            result = runtime.handle_alert(wanted, key)
            done.add(wanted)
            triggered.append(key)
            action = wanted if result.get("scheduled", True) else "not_scheduled"
        seen.add(key)
        events.append(
            ("alert", {"alertname": name, "fingerprint": key, "status": alert.status,
                       "action": action})
        )  # fmt: skip
    runtime.record_events(events)
    return {
        "received": len(payload.alerts),
        "triggered": triggered,
        "deduplicated": duplicates,
        "ignored": ignored,
    }
