"""The whole alert-driven loop with the real programs, on loopback.

The real daemon (``regulator run``, its own process) serves a tiny meta-trained prior on a
simulated environment that shifts abruptly; real Prometheus scrapes it every second and
evaluates the shipped alert rules; real Alertmanager routes ``recalibrate="true"`` alerts
to the daemon's ``/v1/alerts`` webhook with the bearer token from a file. The test never
calls the daemon's mutating API: the shift alone must lead, through that chain, to a
recalibration the daemon records (trigger ``alert``), and then to the alert resolving.
Afterwards every query of every shipped Grafana panel must return data from that
Prometheus, except the few listed in :data:`MAY_BE_EMPTY` with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import promstack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(promstack.missing_binaries()),
        reason=f"not on PATH: {', '.join(promstack.missing_binaries())} "
        "(apt-get install prometheus prometheus-alertmanager)",
    ),
]

DEVICE = "chip0"
TOKEN = "e2e-chain-token-0123456789"
SHIFT_AFTER_S = 20.0  # the simulated environment shifts this long after the source starts
DRIFT_ALERT = "RegulatorDriftDetected"

# Shipped alerts whose `for:` the test keeps long, so they cannot fire in a one-minute run:
# the tiny prior is served un-adapted and classifies near chance before any shift
# (a meta-learned prior is made to be adapted, not used as is), so a 2 s
# RegulatorAccuracyLow would recalibrate before the shift and the test would no longer
# show that the *shift* drives the loop. promtool tests cover that alert's logic.
LONG_FOR = {"RegulatorAccuracyLow": "10m"}

# Panel queries allowed to come back empty after the run, and why.
MAY_BE_EMPTY = {
    "device_reason:regulator_samples_rejected": (
        "no sample is rejected in this run; the per-reason series of "
        "regulator_samples_rejected_total only exist once a sample was rejected"
    ),
}


@dataclass
class Daemon:
    popen: subprocess.Popen[bytes]
    port: int
    state_dir: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def events(self) -> list[dict[str, Any]]:
        path = self.state_dir / "events.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):  # a line being written
                out.append(json.loads(line))
        return out

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


@pytest.fixture(scope="session")
def tiny_prior(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small meta-trained nanosensor prior (about 10 s on 2 cores)."""
    import torch

    from regulator.meta.train import TrainConfig, build_trainer, finalise, train_steps

    folder = tmp_path_factory.mktemp("prior") / "model"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            # train.py converts a loss that requires grad to a float for its history.
            warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
            tr = build_trainer(TrainConfig(iterations=30, meta_batch=4, hidden=(32,), n_steps=16))
            train_steps(tr, 30, progress=False)
            finalise(tr).save(folder)
    finally:
        torch.set_num_threads(threads)
    return folder


def _write_policy(path: Path, prior: Path, token_file: Path, state_dir: Path) -> None:
    policy = {
        "device": {"id": DEVICE, "profile": "loihi", "seed": 0},
        "model": {"prior": str(prior)},
        "source": {
            "kind": "simulated",
            "family": "nanosensor",
            # A shift every SHIFT_AFTER_S: the second one comes after the test is done
            # with the first.
            "schedule": {"kind": "abrupt", "period_s": SHIFT_AFTER_S},
            "rate_hz": 20,
            "label_fraction": 1.0,
            "label_delay_samples": 2,
        },
        "rules": [],  # only alerts may trigger a recalibration
        "alerts": {"enabled": True},
        "recalibration": {
            "k_shot": 5,
            "holdout_per_class": 3,
            "max_per_hour": 10,
            "allow_label_free_fallback": False,  # supervised: labels arrive within 0.1 s
        },
        "http": {"host": "127.0.0.1", "port": 9890, "token_file": str(token_file)},
        "state_dir": str(state_dir),
    }
    path.write_text(yaml.safe_dump(policy, sort_keys=False))


@pytest.fixture
def daemon(tmp_path: Path, tiny_prior: Path) -> Iterator[Daemon]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    state_dir = tmp_path / "state"
    policy = tmp_path / "policy.yaml"
    _write_policy(policy, tiny_prior, token_file, state_dir)
    port = promstack.free_port()
    log = tmp_path / "daemon.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "regulator.cli",
                "run",
                "--config",
                str(policy),
                "--port",
                str(port),
                "--state-dir",
                str(state_dir),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    d = Daemon(popen, port, state_dir, log)
    try:
        yield d
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(30)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(10)


def _value(result: list[dict[str, Any]]) -> float:
    return sum(float(r["value"][1]) for r in result)


def _rfc3339(ts: str) -> float:
    """Seconds since the epoch of Prometheus's RFC 3339 time (nanosecond fractions)."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", ts)
    assert m is not None, ts
    zone = "+00:00" if m[3] == "Z" else m[3]
    return datetime.fromisoformat(m[1] + zone).timestamp() + float(m[2] or 0.0)


def test_shift_alert_recalibration_resolve_and_dashboards(tmp_path: Path, daemon: Daemon) -> None:
    t0 = time.time()
    token_file = tmp_path / "token"
    stack_dir = tmp_path / "stack"
    stack_dir.mkdir()
    with promstack.start(
        stack_dir,
        scrape_targets=[f"127.0.0.1:{daemon.port}"],
        webhook_url=f"{daemon.url}/v1/alerts",
        token_file=token_file,
        rule_for="2s",
        rule_for_alerts=LONG_FOR,
        repeat_interval="15s",  # a rejected candidate is retried on the next notification
    ) as stack:

        def fail(msg: str) -> None:
            pytest.fail(f"{msg}\n--- daemon ---\n{daemon.log_tail()}\n{stack.logs()}")

        def wait(probe: Any, timeout: float, what: str) -> Any:
            try:
                return stack.wait_for(probe, timeout=timeout, interval=0.25)
            except promstack.StackError:
                if daemon.popen.poll() is not None:
                    fail(f"daemon exited with {daemon.popen.returncode} waiting for {what}")
                fail(f"timed out waiting for {what}")

        # The daemon is up and scraped.
        wait(
            lambda: (
                stack.query(f'up{{job="regulator",device="{DEVICE}"}} == 1')
                or stack.query('up{job="regulator"} == 1')
            ),
            60,
            "the daemon's first scrape",
        )
        wait(
            lambda: stack.query(f'regulator_samples_total{{device="{DEVICE}"}} > 0'),
            30,
            "samples flowing",
        )
        t_up = time.time()

        # 1. The shift is detected by the daemon: a detection event, and the latched gauge.
        wait(
            lambda: [e for e in daemon.events() if e["kind"] == "detection"],
            SHIFT_AFTER_S + 30,
            "a drift detection",
        )
        detection = next(e for e in daemon.events() if e["kind"] == "detection")
        t_detect = detection["ts"]
        # Nothing was recalibrated, and no alert reached the daemon, before the shift.
        before = [e for e in daemon.events() if e["ts"] < t_detect]
        assert not [e for e in before if e["kind"] in ("recalibration", "alert")], before

        # 2. Prometheus fires the drift alert.
        firing = wait(
            lambda: [
                a
                for a in stack.prometheus_alerts()
                if a["labels"]["alertname"] == DRIFT_ALERT and a["state"] == "firing"
            ],
            30,
            f"{DRIFT_ALERT} firing in Prometheus",
        )
        assert firing[0]["labels"]["recalibrate"] == "true"
        assert firing[0]["labels"]["device"] == DEVICE
        t_firing_seen = time.time()
        t_active = _rfc3339(firing[0]["activeAt"])

        # 3. Alertmanager calls the webhook (with the token: otherwise 401 and no event).
        alert_events = wait(
            lambda: [
                e
                for e in daemon.events()
                if e["kind"] == "alert"
                and e["fields"].get("alertname") == DRIFT_ALERT
                and e["fields"].get("status") == "firing"
            ],
            30,
            "the daemon receiving the drift alert from Alertmanager",
        )
        t_webhook = alert_events[0]["ts"]

        # 4. The daemon recalibrates, triggered by the alert, and swaps the model in.
        accepted = wait(
            lambda: [
                e
                for e in daemon.events()
                if e["kind"] == "recalibration" and e["fields"].get("outcome") == "accepted"
            ],
            60,
            "an accepted recalibration",
        )
        recal = accepted[0]
        assert recal["fields"]["trigger"] == "alert", recal
        t_recal_done = recal["ts"]
        # Prometheus sees it too: the counter and the new model version.
        wait(
            lambda: stack.query(
                f'regulator_recalibrations_total{{device="{DEVICE}",trigger="alert",'
                f'outcome="accepted"}} > 0'
            ),
            15,
            "the recalibration counter in Prometheus",
        )
        wait(
            lambda: stack.query(
                f'regulator_model_info{{device="{DEVICE}",version="{recal["fields"]["version"]}"}}'
            ),
            15,
            "the new model version in Prometheus",
        )

        # 5. The alert resolves: gone from Prometheus's ALERTS, gone from Alertmanager's
        # active alerts, and the resolved notification reached the daemon.
        wait(
            lambda: not stack.query(f'ALERTS{{alertname="{DRIFT_ALERT}"}}'),
            30,
            f"{DRIFT_ALERT} to leave Prometheus's ALERTS",
        )
        t_resolved_prom = time.time()
        wait(
            lambda: (
                not [
                    a
                    for a in stack.alertmanager_alerts()
                    if a["labels"]["alertname"] == DRIFT_ALERT and a["status"]["state"] == "active"
                ]
            ),
            30,
            f"{DRIFT_ALERT} resolved in Alertmanager",
        )
        resolved = wait(
            lambda: [
                e
                for e in daemon.events()
                if e["kind"] == "alert"
                and e["fields"].get("alertname") == DRIFT_ALERT
                and e["fields"].get("status") == "resolved"
            ],
            30,
            "the resolved notification at the daemon",
        )
        t_resolved_daemon = resolved[0]["ts"]
        # No recalibration other than through alerts.
        triggers = {
            e["fields"].get("trigger") for e in daemon.events() if e["kind"] == "recalibration"
        }
        assert triggers == {"alert"}, triggers

        # 6. Every Grafana panel's queries return data from this Prometheus.
        # Annotations look back 1 minute: still within it of the drift and recalibration.
        time.sleep(2)  # let rate()/increase() recording rules see the swap
        empty: list[str] = []
        allowed_empty: list[str] = []
        for dashboard in promstack.iter_dashboards():
            for where, expr in promstack.dashboard_queries(dashboard, DEVICE):
                try:
                    result = stack.query(expr)
                except promstack.StackError as exc:
                    fail(f"{dashboard.name} {where}: {exc}")
                if result:
                    if any(k in expr for k in MAY_BE_EMPTY):
                        print(f"{where} has data:", [r["metric"] for r in result])
                    continue
                if any(k in expr for k in MAY_BE_EMPTY):
                    allowed_empty.append(f"{dashboard.name} {where}")
                else:
                    empty.append(f"{dashboard.name} {where}: {expr}")
        assert not empty, "panel queries without data:\n" + "\n".join(empty)
        t_end = time.time()

    timings = {
        "daemon_up_s": t_up - t0,
        # The environment shifts at sample SHIFT_AFTER_S * 20 (rate_hz 20).
        "shift_to_detection_samples": detection["fields"]["sample"] - SHIFT_AFTER_S * 20,
        "detection_to_prometheus_active_s": t_active - t_detect,
        "detection_to_firing_seen_s": t_firing_seen - t_detect,
        "detection_to_webhook_s": t_webhook - t_detect,
        "webhook_to_recalibration_done_s": t_recal_done - t_webhook,
        "recalibration_job_s": recal["fields"]["seconds"],
        "detection_to_recalibration_done_s": t_recal_done - t_detect,
        "recalibration_to_resolved_in_prometheus_s": t_resolved_prom - t_recal_done,
        "recalibration_to_resolved_at_daemon_s": t_resolved_daemon - t_recal_done,
        "total_s": t_end - t0,
    }
    print("chain timings:", json.dumps({k: round(v, 2) for k, v in timings.items()}))
    print("panel queries empty, as allowed:", allowed_empty)

    # The daemon stops cleanly on SIGTERM.
    daemon.popen.send_signal(signal.SIGTERM)
    assert daemon.popen.wait(30) == 0, daemon.log_tail()
    assert daemon.events()[-1]["kind"] == "shutdown"

    # The run's own event log makes a report (regulator report).
    from regulator.report import write_report

    pngs = write_report(daemon.state_dir / "events.jsonl", tmp_path / "report")
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)
