"""The promstack helper starts real Prometheus and Alertmanager from deploy/'s files."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e import promstack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        bool(promstack.missing_binaries()),
        reason=f"not on PATH: {', '.join(promstack.missing_binaries())} "
        "(apt-get install prometheus prometheus-alertmanager)",
    ),
]

EXPOSITION = b"""\
# TYPE regulator_samples_total counter
regulator_samples_total{device="chip0"} 42
# TYPE regulator_ood_score gauge
regulator_ood_score{device="chip0"} 0.5
"""


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(EXPOSITION)))
        self.end_headers()
        self.wfile.write(EXPOSITION)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def dummy_target() -> Iterator[str]:
    """A stand-in /metrics endpoint on a free loopback port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.slow
def test_stack_scrapes_target_and_knows_its_alertmanager(tmp_path: Path, dummy_target: str) -> None:
    with promstack.start(tmp_path, scrape_targets=[dummy_target], rule_for="1s") as stack:
        up = stack.wait_for(lambda: stack.query('up{job="regulator"} == 1'))
        assert up[0]["metric"]["instance"] == dummy_target
        samples = stack.wait_for(lambda: stack.query("regulator_samples_total"))
        assert samples[0]["metric"]["device"] == "chip0"
        assert samples[0]["value"][1] == "42"

        # The shipped rules are loaded, with the test's short `for:`.
        groups = {g["name"]: g for g in stack.rules()}
        assert {"regulator-model", "regulator-service", "regulator-recording"} <= set(groups)
        durations = {
            r.get("duration")
            for g in groups.values()
            for r in g["rules"]
            if r["type"] == "alerting"
        }
        assert durations == {1}

        # Prometheus found the Alertmanager it was given, and Alertmanager answers.
        managers = stack.wait_for(stack.active_alertmanagers)
        assert managers[0].startswith(stack.alertmanager_url)
        assert isinstance(stack.alertmanager_alerts(), list)

        # Every Grafana query is valid PromQL for this Prometheus (data comes later,
        # in the end-to-end test with a real daemon).
        for dashboard in promstack.iter_dashboards():
            for where, expr in promstack.dashboard_queries(dashboard, ".*"):
                try:
                    stack.query(expr)
                except promstack.StackError as exc:
                    pytest.fail(f"{dashboard.name} {where}: {exc}")
    # Stopped: both processes have exited.
    assert all(p.popen is not None and p.popen.poll() is not None for p in stack._processes)
