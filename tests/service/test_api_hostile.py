"""A corpus of hostile requests against the real API server (uvicorn, httpx): each is a
4xx with its reason and counted, never a 5xx; and what reaches a 5xx anyway is counted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from regulator.service.api import build_app, serve
from regulator.service.metrics import Metrics
from regulator.service.wiring import is_loopback
from tests.service.test_api import AUTH, TOKEN, FakeRuntime, alert, webhook

POST_ROUTES = ["/v1/recalibrate", "/v1/rollback", "/v1/alerts", "/v1/feedback", "/v1/samples"]


class CountingRuntime(FakeRuntime):
    def __init__(self) -> None:
        super().__init__()
        self.event_batches = 0
        self.handled = 0
        self.explode = False

    def status(self) -> dict[str, Any]:
        if self.explode:
            raise RuntimeError("a bug somewhere below the API")
        return super().status()

    def handle_alert(self, action: str, key: str) -> dict[str, Any]:
        self.handled += 1
        return super().handle_alert(action, key)

    def record_events(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        self.event_batches += 1
        super().record_events(events)


class Server:
    def __init__(self, docs: bool = True) -> None:
        self.runtime = CountingRuntime()
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry, "chip-t", process=False)
        app = build_app(
            self.runtime, self.registry, lambda: TOKEN, 4 << 20, self.metrics, docs=docs
        )
        self.server = serve(app, "127.0.0.1", 0)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.server.port}", timeout=30)

    def value(self, name: str, **labels: str) -> float:
        got = self.registry.get_sample_value(name, {"device": "chip-t", **labels})
        return 0.0 if got is None else got

    def close(self) -> None:
        self.client.close()
        assert self.server.stop(5)


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.mark.parametrize("path", POST_ROUTES)
def test_json_nested_1000_deep_is_400_on_every_post_route(srv: Server, path: str) -> None:
    before = srv.value("regulator_requests_rejected_total", reason="too_deep")
    body = b'{"items": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    r = srv.client.post(path, headers={**AUTH, "Content-Type": "application/json"}, content=body)
    if path == "/v1/rollback":  # takes no body at all
        assert r.status_code == 422, r.text
        return
    assert r.status_code == 400 and r.json()["reason"] == "too_deep", r.text
    assert srv.value("regulator_requests_rejected_total", reason="too_deep") == before + 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"items": [{"sample_id": "a", "y": 1' + b"0" * 400 + b"}]}", "out_of_range"),
        (b'{"items": [{"sample_id": "a", "y": 1e400}]}', "out_of_range"),
        (b'{"items": [{"sample_id": "a", "y": -Infinity}]}', "non_finite"),
        (b'{"items": [{"sample_id": "a", "y": true}]}', "malformed_body"),
        (b'{"items": [{"sample_id": "a", "y": "1"}]}', "malformed_body"),
        (b'{"items": [{"x": [[true, 1.0]], "y": 1}]}', "malformed_body"),
        (b'{"items": [{"x": [["1", 1.0]], "y": 1}]}', "malformed_body"),
        (b'{"items": [{"x": [[3e9, 1.0]], "y": 1}]}', "malformed_body"),
        (b'{"items": [{"sample_id": "a b", "y": 1}]}', "malformed_body"),
        (b'{"items": [{"sample_id": "a\\u0000", "y": 1}]}', "malformed_body"),
        (b'{"items": [{"sample_id": "a", "y": 1, "t": 1e200}]}', "malformed_body"),
        (b'\xff\xfe{"items": []}', "malformed_body"),
        (b'{"items": [{"sample_id": "a", "y": 1}]', "malformed_body"),
    ],
)
def test_hostile_feedback_is_422_with_reason(srv: Server, body: bytes, reason: str) -> None:
    before = srv.value("regulator_requests_rejected_total", reason=reason)
    r = srv.client.post("/v1/feedback", headers=AUTH, content=body)
    assert r.status_code == 422, r.text
    assert r.json()["reason"] == reason
    assert srv.value("regulator_requests_rejected_total", reason=reason) == before + 1
    assert srv.runtime.feedback_items == []


@pytest.mark.parametrize("method", ["TRACE", "PUT", "DELETE", "PATCH", "POST"])
@pytest.mark.parametrize("path", ["/metrics", "/metrics/", "/v1/status", "/healthz", "/v1/models"])
def test_methods_outside_the_contract_are_405(srv: Server, method: str, path: str) -> None:
    before = srv.value("regulator_requests_rejected_total", reason="no_route")
    r = srv.client.request(method, path, headers=AUTH)
    assert r.status_code == 405, (method, path, r.status_code)
    assert srv.value("regulator_requests_rejected_total", reason="no_route") == before + 1


def test_get_on_post_routes_is_405(srv: Server) -> None:
    for path in POST_ROUTES:
        assert srv.client.get(path).status_code == 405


def test_a_5xx_is_counted_and_says_nothing_of_the_cause(srv: Server) -> None:
    before = srv.value("regulator_http_server_errors_total")
    srv.runtime.explode = True
    try:
        r = srv.client.get("/v1/status")
    finally:
        srv.runtime.explode = False
    assert r.status_code == 500 and "bug" not in r.text
    assert srv.value("regulator_http_server_errors_total") == before + 1
    assert srv.client.get("/v1/status").status_code == 200


def test_every_refusal_is_counted_under_its_reason(srv: Server) -> None:
    before = {
        k: srv.value("regulator_requests_rejected_total", reason=k)
        for k in ("unauthorized", "too_large", "malformed_body")
    }
    assert srv.client.post("/v1/feedback", json={}).status_code == 401
    big = b'{"items": [' + b" " * (5 << 20) + b"]}"
    assert srv.client.post("/v1/feedback", headers=AUTH, content=big).status_code == 413
    assert srv.client.post("/v1/feedback", headers=AUTH, content=b"{").status_code == 422
    for k, v in before.items():
        assert srv.value("regulator_requests_rejected_total", reason=k) == v + 1, k


def test_a_9999_alert_body_asks_once_and_writes_one_batch(srv: Server) -> None:
    srv.runtime.pending.clear()
    handled0, batches0 = srv.runtime.handled, srv.runtime.event_batches
    body = webhook(*[alert(f"fp{i}") for i in range(9_999)])
    r = srv.client.post("/v1/alerts", headers=AUTH, json=body)
    assert r.status_code == 200, r.text[:500]
    out = r.json()
    assert out["received"] == 9_999 and len(out["triggered"]) == 1
    assert len(out["deduplicated"]) == 9_998
    assert srv.runtime.handled == handled0 + 1
    assert srv.runtime.event_batches == batches0 + 1


def test_openapi_documents_every_request_body_with_examples(srv: Server) -> None:
    spec = srv.client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path in ("/v1/recalibrate", "/v1/alerts", "/v1/feedback", "/v1/samples"):
        op = spec["paths"][path]["post"]
        content = op["requestBody"]["content"]["application/json"]
        ref = content["schema"]["$ref"].rsplit("/", 1)[-1]
        assert ref in schemas and content["examples"], path
        assert op["security"] == [{"bearer": []}]
        assert {"401", "413", "422"} <= set(op["responses"]), path
    assert "409" in spec["paths"]["/v1/rollback"]["post"]["responses"]
    assert "507" in spec["paths"]["/v1/feedback"]["post"]["responses"]
    # the answer of /v1/samples is documented too, with the models it nests
    answer = spec["paths"]["/v1/samples"]["post"]["responses"]["200"]["content"]
    assert answer["application/json"]["schema"]["$ref"].endswith("/SamplesResponse")
    assert {"SamplesResponse", "Prediction", "Rejection"} <= set(schemas)
    assert srv.client.get("/docs").status_code == 200
    json.dumps(spec)  # serialisable as served


def test_docs_off_when_asked() -> None:
    s = Server(docs=False)
    try:
        assert s.client.get("/openapi.json").status_code == 404
        assert s.client.get("/docs").status_code == 404
    finally:
        s.close()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("example.org", False)],
)  # fmt: skip
def test_loopback_is_told_apart(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
