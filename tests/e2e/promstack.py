"""Real Prometheus and Alertmanager on loopback, configured from ``deploy/``.

A helper for end-to-end tests, not a test. :func:`start` writes configurations derived
from the shipped files (``deploy/prometheus``, ``deploy/alertmanager``) into a work
folder, with short intervals so a test sees scrapes, rule evaluations and notifications
within seconds, starts both programs on free loopback ports with their own data folders,
waits until both report ready, and returns a :class:`PromStack` to query and stop them::

    with promstack.start(tmp_path, scrape_targets=["127.0.0.1:9890"],
                         webhook_url="http://127.0.0.1:9890/v1/alerts",
                         token_file=token_path, rule_for="2s") as stack:
        stack.wait_for(lambda: stack.query('up{job="regulator"} == 1'))

What is changed from the shipped files, and nothing else:

- Prometheus: scrape and evaluation interval (``interval``); the ``regulator`` job's
  targets; the Alertmanager address; other scrape jobs dropped; the rule files copied,
  with every alert's ``for:`` replaced by ``rule_for`` when given, and named alerts'
  by ``rule_for_alerts`` (``{alertname: duration}``).
- Alertmanager: ``group_wait``, ``group_interval`` and ``repeat_interval`` of every
  route; the daemon's webhook URL and the token file; clustering off.

Binaries are looked up on ``PATH`` (Debian: ``prometheus``, ``prometheus-alertmanager``);
:func:`missing_binaries` names any that are absent so a test can skip with that reason.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import yaml

__all__ = [
    "ALERTMANAGER_BINARIES",
    "DEPLOY",
    "GRAFANA",
    "PROMETHEUS_BINARIES",
    "PromStack",
    "StackError",
    "dashboard_queries",
    "free_port",
    "iter_dashboards",
    "missing_binaries",
    "start",
]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
GRAFANA = REPO / "grafana"
PROMETHEUS_BINARIES = ("prometheus",)
ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")
REGULATOR_JOB = "regulator"
REGULATOR_RECEIVER = "regulator"

T = TypeVar("T")


class StackError(RuntimeError):
    """A program did not start, did not become ready, or an API call failed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    >>> 1024 <= free_port() <= 65535
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _which(names: Sequence[str]) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def missing_binaries() -> list[str]:
    """Programs this helper needs that are not on PATH (empty when all are there)."""
    missing = []
    if _which(PROMETHEUS_BINARIES) is None:
        missing.append("prometheus")
    if _which(ALERTMANAGER_BINARIES) is None:
        missing.append("alertmanager (Debian: prometheus-alertmanager)")
    return missing


def _http_json(url: str, *, data: bytes | None = None, timeout: float = 5.0) -> Any:
    request = urllib.request.Request(url, data=data)
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


@dataclass
class _Process:
    name: str
    args: list[str]
    log: Path
    ready_url: str
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, deadline: float) -> None:
        assert self.popen is not None
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise StackError(
                    f"{self.name} exited with {self.popen.returncode} before it was ready:\n"
                    f"{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.ready_url, timeout=1.0) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.1)
        raise StackError(f"{self.name} not ready at {self.ready_url}:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout)


@dataclass
class PromStack:
    """Running Prometheus and Alertmanager; a context manager that stops both."""

    workdir: Path
    prometheus_url: str
    alertmanager_url: str
    prometheus_config: Path
    alertmanager_config: Path
    _processes: list[_Process] = field(default_factory=list, repr=False)

    # --- Prometheus HTTP API -----------------------------------------------------------

    def query(self, expr: str, *, time_s: float | None = None) -> list[dict[str, Any]]:
        """Instant query; the ``result`` list. Raises StackError on a bad expression."""
        params = {"query": expr}
        if time_s is not None:
            params["time"] = f"{time_s:.3f}"
        body = urllib.parse.urlencode(params).encode()
        try:
            reply = _http_json(f"{self.prometheus_url}/api/v1/query", data=body)
        except urllib.error.HTTPError as exc:
            raise StackError(f"query {expr!r}: {exc.code} {exc.read().decode()}") from exc
        if reply.get("status") != "success":
            raise StackError(f"query {expr!r}: {reply}")
        result: list[dict[str, Any]] = reply["data"]["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        """Rule groups as Prometheus loaded them (``/api/v1/rules``)."""
        groups: list[dict[str, Any]] = _http_json(f"{self.prometheus_url}/api/v1/rules")["data"][
            "groups"
        ]
        return groups

    def prometheus_alerts(self) -> list[dict[str, Any]]:
        """Alerts pending or firing in Prometheus."""
        alerts: list[dict[str, Any]] = _http_json(f"{self.prometheus_url}/api/v1/alerts")["data"][
            "alerts"
        ]
        return alerts

    def active_alertmanagers(self) -> list[str]:
        """URLs of the Alertmanagers Prometheus is sending to."""
        data = _http_json(f"{self.prometheus_url}/api/v1/alertmanagers")["data"]
        return [am["url"] for am in data["activeAlertmanagers"]]

    # --- Alertmanager HTTP API ---------------------------------------------------------

    def alertmanager_alerts(self) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds (``/api/v2/alerts``)."""
        alerts: list[dict[str, Any]] = _http_json(f"{self.alertmanager_url}/api/v2/alerts")
        return alerts

    # --- waiting and stopping ------------------------------------------------------------

    def wait_for(
        self, probe: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.25
    ) -> T:
        """Call ``probe`` until it returns something truthy; that value, or StackError."""
        deadline = time.monotonic() + timeout
        last: T = probe()
        while not last:
            if time.monotonic() > deadline:
                raise StackError(f"timed out after {timeout} s; last value {last!r}\n{self.logs()}")
            time.sleep(interval)
            last = probe()
        return last

    def logs(self, lines: int = 20) -> str:
        """The tail of each program's log, for failure messages."""
        return "\n".join(f"--- {p.name} ---\n{p.log_tail(lines)}" for p in self._processes)

    def stop(self) -> None:
        """Stop both programs (SIGTERM, then SIGKILL after 10 s)."""
        for process in reversed(self._processes):
            process.stop()

    def __enter__(self) -> PromStack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- configuration derived from deploy/ ---------------------------------------------------


def _prometheus_config(
    *,
    workdir: Path,
    scrape_targets: Sequence[str],
    alertmanager_port: int,
    interval: str,
    rule_for: str | None,
    rule_for_alerts: Mapping[str, str] | None = None,
) -> Path:
    source = DEPLOY / "prometheus"
    config = yaml.safe_load((source / "prometheus.yml").read_text())
    rules_dir = workdir / "rules"
    rules_dir.mkdir()
    per_alert = dict(rule_for_alerts or {})
    unknown = set(per_alert)
    for rule_file in sorted((source / "rules").glob("*.yml")):
        groups = yaml.safe_load(rule_file.read_text())
        if rule_for is not None:
            for group in groups["groups"]:
                for rule in group["rules"]:
                    if "alert" in rule:
                        rule["for"] = rule_for
        for group in groups["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") in per_alert:
                    rule["for"] = per_alert[rule["alert"]]
                    unknown.discard(rule["alert"])
        (rules_dir / rule_file.name).write_text(yaml.safe_dump(groups, sort_keys=False))
    if unknown:
        raise StackError(f"rule_for_alerts: no such alert in deploy/: {sorted(unknown)}")
    config["global"].update(
        scrape_interval=interval, evaluation_interval=interval, scrape_timeout=interval
    )
    config["rule_files"] = [str(rules_dir / "*.yml")]
    config["alerting"] = {
        "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]
    }
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == REGULATOR_JOB]
    if len(jobs) != 1:
        raise StackError(f"deploy/prometheus/prometheus.yml: no single {REGULATOR_JOB!r} job")
    jobs[0]["static_configs"] = [{"targets": list(scrape_targets)}]
    config["scrape_configs"] = jobs
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _shorten_route(route: dict[str, Any], group_wait: str, repeat_interval: str) -> None:
    route["group_wait"] = group_wait
    route["group_interval"] = group_wait
    route["repeat_interval"] = repeat_interval
    for child in route.get("routes", []):
        _shorten_route(child, group_wait, repeat_interval)


def _alertmanager_config(
    *,
    workdir: Path,
    webhook_url: str | None,
    token_file: Path,
    group_wait: str,
    repeat_interval: str,
) -> Path:
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    _shorten_route(config["route"], group_wait, repeat_interval)
    receivers = [r for r in config["receivers"] if r["name"] == REGULATOR_RECEIVER]
    if len(receivers) != 1:
        raise StackError(f"deploy/alertmanager: no single {REGULATOR_RECEIVER!r} receiver")
    for webhook in receivers[0]["webhook_configs"]:
        if webhook_url is not None:
            webhook["url"] = webhook_url
        webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    # People are not mailed from tests (the shipped mail server is a placeholder).
    config["receivers"] = [
        r if r["name"] == REGULATOR_RECEIVER else {"name": r["name"]} for r in config["receivers"]
    ]
    config.pop("templates", None)
    path = workdir / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start(
    workdir: Path,
    *,
    scrape_targets: Sequence[str],
    webhook_url: str | None = None,
    token_file: Path | None = None,
    interval: str = "1s",
    rule_for: str | None = None,
    rule_for_alerts: Mapping[str, str] | None = None,
    group_wait: str = "1s",
    repeat_interval: str = "1m",
    ready_timeout: float = 60.0,
) -> PromStack:
    """Start Prometheus and Alertmanager; a ready :class:`PromStack`.

    ``workdir`` must exist and is used for configurations, data folders and logs.
    ``scrape_targets`` are ``host:port`` of the daemon(s) (job ``regulator``).
    ``webhook_url`` replaces the daemon's ``/v1/alerts`` URL; ``token_file`` holds the
    bearer token Alertmanager sends (a placeholder is written when omitted).
    ``rule_for`` replaces every alert's ``for:`` (e.g. ``"2s"``), so that alerts fire
    within a test's patience; ``None`` keeps the shipped durations.
    ``rule_for_alerts`` sets ``for:`` of the named alerts (``{"RegulatorAccuracyLow":
    "10m"}``), after ``rule_for``; an unknown name raises StackError.
    Raises StackError (with the programs' log tails) if either does not become ready.
    """
    missing = missing_binaries()
    if missing:
        raise StackError(f"not on PATH: {', '.join(missing)}")
    prometheus_bin = _which(PROMETHEUS_BINARIES)
    alertmanager_bin = _which(ALERTMANAGER_BINARIES)
    assert prometheus_bin is not None and alertmanager_bin is not None

    workdir = Path(workdir)
    if token_file is None:
        token_file = workdir / "token"
        token_file.write_text("promstack-placeholder-token\n")
        token_file.chmod(0o600)
    prometheus_port, alertmanager_port = free_port(), free_port()
    while alertmanager_port == prometheus_port:
        alertmanager_port = free_port()

    prometheus_config = _prometheus_config(
        workdir=workdir,
        scrape_targets=scrape_targets,
        alertmanager_port=alertmanager_port,
        interval=interval,
        rule_for=rule_for,
        rule_for_alerts=rule_for_alerts,
    )
    alertmanager_config = _alertmanager_config(
        workdir=workdir,
        webhook_url=webhook_url,
        token_file=token_file,
        group_wait=group_wait,
        repeat_interval=repeat_interval,
    )
    prometheus_url = f"http://127.0.0.1:{prometheus_port}"
    alertmanager_url = f"http://127.0.0.1:{alertmanager_port}"
    (workdir / "alertmanager-data").mkdir()
    (workdir / "prometheus-data").mkdir()
    alertmanager = _Process(
        name="alertmanager",
        args=[
            alertmanager_bin,
            f"--config.file={alertmanager_config}",
            f"--storage.path={workdir / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{alertmanager_port}",
            "--cluster.listen-address=",
            "--log.level=debug",
        ],
        log=workdir / "alertmanager.log",
        ready_url=f"{alertmanager_url}/-/ready",
    )
    prometheus = _Process(
        name="prometheus",
        args=[
            prometheus_bin,
            f"--config.file={prometheus_config}",
            f"--storage.tsdb.path={workdir / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
            "--log.level=debug",
        ],
        log=workdir / "prometheus.log",
        ready_url=f"{prometheus_url}/-/ready",
    )
    stack = PromStack(
        workdir=workdir,
        prometheus_url=prometheus_url,
        alertmanager_url=alertmanager_url,
        prometheus_config=prometheus_config,
        alertmanager_config=alertmanager_config,
        _processes=[alertmanager, prometheus],
    )
    try:
        deadline = time.monotonic() + ready_timeout
        for process in stack._processes:
            process.start()
        for process in stack._processes:
            process.wait_ready(deadline)
    except BaseException:
        stack.stop()
        raise
    return stack


# --- Grafana dashboards -------------------------------------------------------------------


def dashboard_queries(dashboard: Path | dict[str, Any], device: str) -> list[tuple[str, str]]:
    """Every PromQL expression of a dashboard: ``(where, expr)`` pairs, ``where`` being
    the panel title and refId or the annotation name, with ``$device`` (and ``${device}``)
    replaced by ``device`` (a regular expression such as ``.*`` suits ``=~``)."""
    data = json.loads(dashboard.read_text()) if isinstance(dashboard, Path) else dashboard
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if "expr" in target:
                    where = f"panel {panel.get('title')!r} {target.get('refId')}"
                    found.append((where, target["expr"]))
            walk(panel.get("panels", []))

    walk(data.get("panels", []))
    for annotation in data.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            found.append((f"annotation {annotation.get('name')!r}", annotation["expr"]))
    return [
        (where, expr.replace("${device}", device).replace("$device", device))
        for where, expr in found
    ]


def iter_dashboards() -> Iterator[Path]:
    """The shipped dashboard files."""
    yield from sorted((GRAFANA / "dashboards").glob("*.json"))
