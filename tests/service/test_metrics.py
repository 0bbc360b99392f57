"""Every contracted metric exists, carries the device label, and reload is safe."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from regulator.service.exposition import MetricsApp, SharedRender
from regulator.service.metrics import Metrics
from regulator.service.server import serve

DEV = {"device": "chip-7"}

CONTRACT = [
    "regulator_samples_total",
    "regulator_samples_rejected_total",
    "regulator_inference_seconds",
    "regulator_spike_density",
    "regulator_synaptic_ops_total",
    "regulator_energy_joules_total",
    "regulator_power_watts",
    "regulator_ood_score",
    "regulator_ood_threshold",
    "regulator_drift_detected",
    "regulator_drift_alarms_total",
    "regulator_accuracy",
    "regulator_recalibrations_total",
    "regulator_recalibration_seconds",
    "regulator_model_info",
    "regulator_policy_reload_failures_total",
    "regulator_calibration_samples_needed",
    "regulator_layer_silent",
    "regulator_layer_saturated",
    "regulator_dense_ann_energy_joules_total",
    "regulator_scheduler_jobs_total",
    "regulator_alerts_received_total",
]


@pytest.fixture
def reg() -> CollectorRegistry:
    return CollectorRegistry()


def test_unlabelled_metrics_exist_with_device(reg: CollectorRegistry) -> None:
    Metrics(reg, "chip-7")
    for name in [
        "regulator_samples_total",
        "regulator_synaptic_ops_total",
        "regulator_power_watts",
        "regulator_ood_score",
        "regulator_ood_threshold",
        "regulator_drift_detected",
        "regulator_drift_alarms_total",
        "regulator_accuracy",
        "regulator_policy_reload_failures_total",
        "regulator_calibration_samples_needed",
        "regulator_dense_ann_energy_joules_total",
        "regulator_inference_seconds_count",
        "regulator_recalibration_seconds_count",
    ]:
        assert reg.get_sample_value(name, DEV) == 0.0, name
    for phase in ("inference", "learning"):
        assert reg.get_sample_value("regulator_energy_joules_total", {**DEV, "phase": phase}) == 0
    for status in ("firing", "resolved"):
        assert (
            reg.get_sample_value("regulator_alerts_received_total", {**DEV, "status": status}) == 0
        )


def test_every_contract_name_is_exposed(reg: CollectorRegistry) -> None:
    m = Metrics(reg, "chip-7")
    m.samples_rejected.labels(reason="nan").inc()
    m.spike_density.labels(layer="hidden").set(0.1)
    m.layer_silent.labels(layer="out").set(1)
    m.layer_saturated.labels(layer="out").set(0)
    m.record_recalibration("drift", "accepted", seconds=1.5)
    m.set_model("v000001", "nanosensor")
    m.scheduler_jobs.labels(job="recalibrate", outcome="missed").inc()
    text = generate_latest(reg).decode()
    for name in CONTRACT:
        assert f"\n{name}" in text or text.startswith(name) or f"# TYPE {name} " in text, name
    for line in text.splitlines():
        if line.startswith("regulator_"):
            assert 'device="chip-7"' in line, line


def test_labelled_values(reg: CollectorRegistry) -> None:
    m = Metrics(reg, "chip-7")
    m.spike_density.labels(layer="hidden").set(0.25)
    m.layer_saturated.labels(layer="out").set(1)
    m.layer_silent.labels(layer="out").set(0)
    assert reg.get_sample_value("regulator_spike_density", {**DEV, "layer": "hidden"}) == 0.25
    assert reg.get_sample_value("regulator_layer_saturated", {**DEV, "layer": "out"}) == 1
    assert reg.get_sample_value("regulator_layer_silent", {**DEV, "layer": "out"}) == 0
    m.energy.labels(phase="learning").inc(2e-6)
    assert reg.get_sample_value(
        "regulator_energy_joules_total", {**DEV, "phase": "learning"}
    ) == pytest.approx(2e-6)
    m.spike_density.remove(layer="hidden")
    assert reg.get_sample_value("regulator_spike_density", {**DEV, "layer": "hidden"}) is None


def test_recalibration_outcomes(reg: CollectorRegistry) -> None:
    m = Metrics(reg, "chip-7")
    m.init_recalibration_series(["drift", "alert"])
    for outcome in ("accepted", "rejected", "failed", "skipped"):
        assert (
            reg.get_sample_value(
                "regulator_recalibrations_total", {**DEV, "trigger": "alert", "outcome": outcome}
            )
            == 0
        )
    m.record_recalibration("alert", "rejected")
    assert (
        reg.get_sample_value(
            "regulator_recalibrations_total", {**DEV, "trigger": "alert", "outcome": "rejected"}
        )
        == 1
    )
    with pytest.raises(ValueError, match="valid: accepted, rejected, failed, skipped"):
        m.record_recalibration("alert", "maybe")


def test_model_info_single_series(reg: CollectorRegistry) -> None:
    m = Metrics(reg, "chip-7")
    m.set_model("v000001", "p")
    m.set_model("v000002", "p")
    assert (
        reg.get_sample_value("regulator_model_info", {**DEV, "version": "v000001", "prior": "p"})
        is None
    )
    assert (
        reg.get_sample_value("regulator_model_info", {**DEV, "version": "v000002", "prior": "p"})
        == 1
    )


def test_second_instance_on_new_registry(reg: CollectorRegistry) -> None:
    Metrics(reg, "chip-7").samples.inc()
    reg2 = CollectorRegistry()
    m2 = Metrics(reg2, "chip-7")
    assert reg2.get_sample_value("regulator_samples_total", DEV) == 0
    m2.samples.inc(2)
    assert reg.get_sample_value("regulator_samples_total", DEV) == 1
    with pytest.raises(ValueError):
        Metrics(reg, "chip-7")


def test_empty_device_refused(reg: CollectorRegistry) -> None:
    with pytest.raises(ValueError, match="device"):
        Metrics(reg, "")


# -- the /metrics app ------------------------------------------------------------------------


@contextlib.contextmanager
def _scrape_client(reg: CollectorRegistry) -> Iterator[httpx.Client]:
    """MetricsApp alone behind a real uvicorn on a free loopback port."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    app = Starlette(routes=[Route("/metrics", MetricsApp(reg), methods=["GET"])])
    server = serve(app, "127.0.0.1", 0)  # type: ignore[arg-type]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
            yield client
    finally:
        server.stop()


def test_metrics_app_serves_what_prometheus_client_does(reg: CollectorRegistry) -> None:
    m = Metrics(reg, "chip-7")
    with _scrape_client(reg) as client:
        m.samples.inc(2)
        r = client.get("/metrics")  # httpx asks for gzip and gets it (decoded here)
        assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert 'regulator_samples_total{device="chip-7"} 2.0' in r.text
        m.samples.inc()  # the next scrape sees it: no answer predates its request
        assert 'regulator_samples_total{device="chip-7"} 3.0' in client.get("/metrics").text
        r = client.get("/metrics", headers={"accept": "application/openmetrics-text"})
        assert r.headers["content-type"].startswith("application/openmetrics-text")
        assert r.text.rstrip().endswith("# EOF")
        r = client.get("/metrics", params={"name[]": "regulator_samples_total"})
        assert r.text.count("# TYPE") == 1, r.text


def test_concurrent_scrapes_share_one_render() -> None:
    """Scrapes that arrive during a render wait for one more, started after all of
    them arrived: a burst of N scrapes costs two renders, and none sees older data."""
    started, release = threading.Event(), threading.Event()
    value = [0]
    renders: list[int] = []

    def render() -> bytes:
        seen = value[0]  # what this render reads
        renders.append(seen)
        if len(renders) == 1:
            started.set()
            release.wait(10)
        return str(seen).encode()

    shared = SharedRender(render)
    out: dict[str, bytes] = {}
    first = threading.Thread(target=lambda: out.update(a=shared.fresh()))
    first.start()
    assert started.wait(10)
    value[0] = 1  # changed after the first render began, before the others arrive
    late = [threading.Thread(target=lambda k=k: out.update({k: shared.fresh()})) for k in "bcd"]
    for t in late:
        t.start()
    time.sleep(0.2)  # let them reach the wait
    release.set()
    for t in (first, *late):
        t.join(10)
    assert out == {"a": b"0", "b": b"1", "c": b"1", "d": b"1"}
    assert renders == [0, 1]


def test_scrapes_within_the_age_bound_share_the_latest_render() -> None:
    """With ``max_age_s``, a scrape is answered with the latest render while it is
    younger than the bound (no render), and with a fresh one after it."""
    renders = [0]

    def render() -> bytes:
        renders[0] += 1
        return str(renders[0]).encode()

    shared = SharedRender(render)
    assert shared.recent(10.0) is None  # nothing rendered yet
    assert shared.fresh(10.0) == b"1"
    assert shared.fresh(10.0) == b"1" and shared.recent(10.0) == b"1"
    assert renders == [1]
    assert shared.fresh() == b"2"  # no bound: a render after the call
    time.sleep(0.06)
    assert shared.recent(0.05) is None and shared.fresh(0.05) == b"3"


def test_metrics_app_age_bound_and_no_cache(reg: CollectorRegistry) -> None:
    """Behind uvicorn: scrapes within ``max_age_s`` of a render see it (gzip and plain),
    ``Cache-Control: no-cache`` always gets a render after the request, and past the
    bound the next scrape renders afresh."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    m = Metrics(reg, "chip-7")
    app = Starlette(routes=[Route("/metrics", MetricsApp(reg, 0.5), methods=["GET"])])
    server = serve(app, "127.0.0.1", 0)  # type: ignore[arg-type]
    line = 'regulator_samples_total{device="chip-7"} %s'
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as c:
            m.samples.inc(1)
            assert line % "1.0" in c.get("/metrics").text
            m.samples.inc(1)  # within the bound: the shared render, zipped or not
            assert line % "1.0" in c.get("/metrics").text
            plain = c.get("/metrics", headers={"accept-encoding": "identity"})
            assert "content-encoding" not in plain.headers and line % "1.0" in plain.text
            fresh = c.get("/metrics", headers={"cache-control": "no-cache"})
            assert line % "2.0" in fresh.text
            m.samples.inc(1)
            time.sleep(0.6)
            assert line % "3.0" in c.get("/metrics").text
    finally:
        server.stop()
    with pytest.raises(ValueError, match="max_age_s"):
        MetricsApp(reg, -1.0)


def test_no_created_series(reg: CollectorRegistry) -> None:
    """Counters and histograms export no ``*_created`` series (nothing reads them, and
    they were half the exposition); their values are unchanged."""
    m = Metrics(reg, "chip-7")
    m.samples.inc(2)
    m.inference_seconds.observe(0.001)
    text = generate_latest(reg).decode()
    assert "_created" not in text
    assert 'regulator_samples_total{device="chip-7"} 2.0' in text
    assert 'regulator_inference_seconds_count{device="chip-7"} 1.0' in text
