"""The HTTP API through a real uvicorn server on a free port, with a real httpx client."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from regulator.errors import ConfigError, RegistryError
from regulator.service.api import FeedbackItem, Sample, ServerThread, build_app, serve
from regulator.service.metrics import Metrics

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEV = {"device": "chip-t"}


class FakeRuntime:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.recal_requests: list[tuple[str, str | None]] = []
        self.pending: set[str] = set()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.feedback_items: list[FeedbackItem] = []
        self.samples: list[Sample] = []
        self.waits: list[bool] = []
        self.can_rollback = True
        self.http_source = True
        self.is_healthy = True

    def healthy(self) -> bool:
        return self.is_healthy

    def ready(self) -> bool:
        return False

    def status(self) -> dict[str, Any]:
        return {"model": "v000001", "pending_jobs": sorted(self.pending)}

    def models(self) -> list[dict[str, Any]]:
        return [{"version": "v000001", "status": "good"}]

    def request_recalibration(self, trigger: str, key: str | None = None) -> dict[str, Any]:
        with self.lock:
            self.recal_requests.append((trigger, key))
            scheduled = not self.pending
            if key is not None:
                self.pending.add(key)
        return {"scheduled": scheduled, "pending": True}

    def alert_action(self, labels: dict[str, str]) -> str | None:
        wants = labels.get("recalibrate", "").strip().lower() == "true"
        return "recalibrate_supervised" if wants else None

    def handle_alert(self, action: str, key: str) -> dict[str, Any]:
        return self.request_recalibration("alert", key)

    def recalibration_pending(self, key: str | None = None) -> bool:
        with self.lock:
            return bool(self.pending) if key is None else key in self.pending

    def rollback(self) -> dict[str, Any]:
        if not self.can_rollback:
            raise RegistryError("no earlier good version to roll back to from v000001")
        return {"serving": "v000001"}

    def feedback(self, items: list[FeedbackItem]) -> dict[str, Any]:
        self.feedback_items += items
        return {"accepted": len(items)}

    def push_samples(self, items: list[Sample], wait: bool = True) -> dict[str, Any]:
        if not self.http_source:
            raise ConfigError("the source is not http")
        self.samples += items
        self.waits.append(wait)
        return {"accepted": len(items), "rejected": []}

    def record_events(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        self.events.extend(events)


class Harness:
    def __init__(self, token: str | None = TOKEN, max_body: int = 4096) -> None:
        self.runtime = FakeRuntime()
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry, "chip-t")
        self.token: str | None = token
        app = build_app(self.runtime, self.registry, lambda: self.token, max_body, self.metrics)
        self.server: ServerThread = serve(app, "127.0.0.1", 0)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.server.port}", timeout=10)

    def close(self) -> None:
        self.client.close()
        assert self.server.stop(5)

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {**DEV, **labels})


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def alert(fp: str, status: str = "firing", recal: str = "true") -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "RegulatorDrift", "recalibrate": recal, "device": "chip-t"},
        "annotations": {"summary": "drift"},
        "startsAt": "2024-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fp,
    }


def webhook(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="RegulatorDrift"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "regulator",
        "groupLabels": {"alertname": "RegulatorDrift"},
        "commonLabels": {"alertname": "RegulatorDrift"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


def test_read_routes_are_open(h: Harness) -> None:
    assert h.client.get("/healthz").json() == {"status": "ok"}
    r = h.client.get("/readyz")
    assert r.status_code == 503 and r.json() == {"status": "not ready"}
    assert h.client.get("/v1/status").json()["model"] == "v000001"
    assert h.client.get("/v1/models").json() == {
        "versions": [{"version": "v000001", "status": "good"}]
    }


def test_metrics_scrape(h: Harness) -> None:
    h.metrics.samples.inc(5)
    r = h.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert 'regulator_samples_total{device="chip-t"} 5.0' in r.text
    assert "regulator_recalibrations_total" in r.text or "regulator_model_info" in r.text
    assert h.client.get("/metrics/").status_code == 200


@pytest.mark.parametrize(
    "path", ["/v1/recalibrate", "/v1/rollback", "/v1/alerts", "/v1/feedback", "/v1/samples"]
)
def test_mutating_routes_need_the_token(h: Harness, path: str) -> None:
    r = h.client.post(path, json={})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = h.client.post(path, json={}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["detail"] == "invalid bearer token"
    r = h.client.post(path, json={}, headers={"Authorization": f"Basic {TOKEN}"})
    assert r.status_code == 401


def test_recalibrate_with_token(h: Harness) -> None:
    r = h.client.post("/v1/recalibrate", headers=AUTH)
    assert r.status_code == 202 and r.json()["pending"] is True
    assert h.runtime.recal_requests[-1] == ("http", "http")
    r = h.client.post("/v1/recalibrate", headers=AUTH, json={"reason": "sensor swap"})
    assert r.status_code == 202
    r = h.client.post("/v1/recalibrate", headers=AUTH, json={"bogus": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "extra_forbidden"


def test_rollback(h: Harness) -> None:
    assert h.client.post("/v1/rollback", headers=AUTH).json() == {"serving": "v000001"}
    h.runtime.can_rollback = False
    try:
        r = h.client.post("/v1/rollback", headers=AUTH)
        assert r.status_code == 409 and "no earlier good version" in r.json()["detail"]
    finally:
        h.runtime.can_rollback = True


def test_oversize_is_413(h: Harness) -> None:
    big = b'{"items": [' + b" " * 5000 + b"]}"
    r = h.client.post("/v1/feedback", headers=AUTH, content=big)
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed check
        for _ in range(10):
            yield b" " * 1000

    r = h.client.post("/v1/feedback", headers=AUTH, content=chunks())
    assert r.status_code == 413
    assert h.client.get("/healthz").status_code == 200  # still serving


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'{"items": []}',
        b'{"items": [{"y": 1}]}',
        b'{"items": [{"sample_id": "a", "y": "cat"}]}',
        b'{"items": [{"x": [[1, 2], [3]], "y": 1}]}',
        b'{"items": [{"x": [NaN], "y": 1}]}',
    ],
)
def test_malformed_feedback_is_422(h: Harness, body: bytes) -> None:
    r = h.client.post("/v1/feedback", headers=AUTH, content=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


def test_feedback_accepted(h: Harness) -> None:
    items = [
        {"sample_id": "s1", "y": 2},
        {"sample_id": "c1", "x": [[0.1, 0.2], [0.3, 0.4]], "y": 0, "t": 5.0, "env": {"temp": 30}},
    ]
    r = h.client.post("/v1/feedback", headers=AUTH, json={"items": items})
    assert r.status_code == 200 and r.json() == {"accepted": 2}
    got = h.runtime.feedback_items[-2:]
    assert got[0].sample_id == "s1" and got[0].x is None
    assert got[1].x == [[0.1, 0.2], [0.3, 0.4]] and got[1].env == {"temp": 30}


def test_samples_validated_and_rejections_counted(h: Harness) -> None:
    before = h.value("regulator_samples_rejected_total", reason="non_finite") or 0.0
    body = (
        b'{"samples": [{"x": [1.0, 2.0]}, {"x": [1e999]}, {"x": [[1], [2, 3]]},'
        b' {"x": ["1"]}, {"y": 1}, {"sample_id": "q", "x": [[0.5], [0.25]], "t": 1.5},'
        b' {"x": [true]}, {"x": [2e9]}]}'
    )
    r = h.client.post("/v1/samples", headers=AUTH, content=body)
    # 1e999 is not a float any JSON number can be: the whole body is refused
    assert r.status_code == 422 and r.json()["reason"] == "out_of_range", r.text
    body = body.replace(b"1e999", b"1e3")
    r = h.client.post("/v1/samples", headers=AUTH, content=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["accepted"] == 3
    assert [(x["index"], x["reason"]) for x in out["rejected"]] == [
        (2, "bad_shape"),
        (3, "bad_value"),
        (4, "malformed_body"),
        (6, "bad_value"),
        (7, "out_of_range"),
    ]
    r = h.client.post("/v1/samples", headers=AUTH, content=b'{"samples": [{"x": [Infinity]}]}')
    assert r.status_code == 422 and r.json()["reason"] == "non_finite"
    assert h.value("regulator_samples_rejected_total", reason="non_finite") == before + 1
    assert h.runtime.samples[-1].sample_id == "q"
    r = h.client.post("/v1/samples", headers=AUTH, json={"samples": [{"x": []}]})
    assert r.status_code == 422
    r = h.client.post("/v1/samples", headers=AUTH, content=b"garbage")
    assert r.status_code == 422
    assert h.value("regulator_samples_rejected_total", reason="malformed_body") >= 1  # type: ignore[operator]


def test_samples_wait_is_passed_on(h: Harness) -> None:
    x = {"x": [[0.5], [0.25]]}
    assert h.client.post("/v1/samples", headers=AUTH, json={"samples": [x]}).status_code == 200
    r = h.client.post("/v1/samples", headers=AUTH, json={"samples": [x], "wait": False})
    assert r.status_code == 200
    assert h.runtime.waits[-2:] == [True, False]  # waiting is the default
    r = h.client.post("/v1/samples", headers=AUTH, json={"samples": [x], "wait": "no"})
    assert r.status_code == 422


def test_samples_when_source_is_not_http(h: Harness) -> None:
    h.runtime.http_source = False
    try:
        r = h.client.post("/v1/samples", headers=AUTH, json={"samples": [{"x": [1.0]}]})
        assert r.status_code == 409 and "not http" in r.json()["detail"]
    finally:
        h.runtime.http_source = True


def test_alerts_dedup_and_resolved_ignored(h: Harness) -> None:
    h.runtime.pending.clear()
    n0 = len(h.runtime.recal_requests)
    firing0 = h.value("regulator_alerts_received_total", status="firing") or 0.0
    r = h.client.post(
        "/v1/alerts",
        headers=AUTH,
        json=webhook(alert("fp1"), alert("fp1"), alert("fp2", recal="false")),
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 3, "triggered": ["fp1"], "deduplicated": ["fp1"], "ignored": 1}
    # repeated notification while that recalibration is pending: no new request
    r = h.client.post("/v1/alerts", headers=AUTH, json=webhook(alert("fp1")))
    assert r.json()["deduplicated"] == ["fp1"]
    assert h.runtime.recal_requests[n0:] == [("alert", "fp1")]
    # resolved alerts never trigger, even with recalibrate="true"
    h.runtime.pending.clear()
    r = h.client.post(
        "/v1/alerts", headers=AUTH, json=webhook(alert("fp1", status="resolved"), status="resolved")
    )
    assert r.json()["triggered"] == [] and r.json()["ignored"] == 1
    assert h.runtime.recal_requests[n0:] == [("alert", "fp1")]
    # once no longer pending, the same fingerprint triggers again
    r = h.client.post("/v1/alerts", headers=AUTH, json=webhook(alert("fp1")))
    assert r.json()["triggered"] == ["fp1"]
    assert h.value("regulator_alerts_received_total", status="firing") == firing0 + 5
    assert h.value("regulator_alerts_received_total", status="resolved") >= 1  # type: ignore[operator]
    actions = [f["action"] for k, f in h.runtime.events if k == "alert"]
    assert {"recalibrate_supervised", "duplicate", "ignored"} <= set(actions)


def test_alert_payload_checked(h: Harness) -> None:
    bad_version = {**webhook(alert("x")), "version": "3"}
    assert h.client.post("/v1/alerts", headers=AUTH, json=bad_version).status_code == 422
    no_alerts = {k: v for k, v in webhook().items() if k != "alerts"}
    assert h.client.post("/v1/alerts", headers=AUTH, json=no_alerts).status_code == 422
    # unknown keys from a newer Alertmanager are tolerated
    extra = {**webhook(alert("y", recal="false")), "newField": 1}
    assert h.client.post("/v1/alerts", headers=AUTH, json=extra).status_code == 200


def test_unhealthy_is_503(h: Harness) -> None:
    h.runtime.is_healthy = False
    try:
        assert h.client.get("/healthz").status_code == 503
    finally:
        h.runtime.is_healthy = True


def test_no_token_configured_refuses() -> None:
    harness = Harness(token=None)
    try:
        r = harness.client.post("/v1/recalibrate", headers=AUTH)
        assert r.status_code == 503 and "no API token is configured" in r.json()["detail"]
        assert harness.runtime.recal_requests == []
        assert harness.client.get("/healthz").status_code == 200
    finally:
        harness.close()


def test_serve_reports_bind_failure(h: Harness) -> None:
    app = build_app(FakeRuntime(), CollectorRegistry(), lambda: TOKEN, 1024)
    with pytest.raises(OSError, match="could not start"):
        serve(app, "127.0.0.1", h.server.port)
