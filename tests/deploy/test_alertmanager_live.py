"""deploy/alertmanager in a real Alertmanager: the inhibit rule fires (low accuracy hides
the drift warning of the same device, not of another), and the people's receiver sends
mail whose subject and body come from templates/regulator.tmpl (to an SMTP server on
127.0.0.1 that this test runs)."""

from __future__ import annotations

import email
import json
import shutil
import socketserver
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.promstack import free_port

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
TEMPLATES = REPO / "deploy" / "alertmanager" / "templates"
BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

pytestmark = pytest.mark.skipif(
    BINARY is None, reason="alertmanager not installed (Debian: prometheus-alertmanager)"
)


class _Smtp(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321, no TLS, no AUTH) to receive one message per session."""

    def handle(self) -> None:
        self.wfile.write(b"220 test ESMTP\r\n")
        while line := self.rfile.readline():
            cmd = line.decode(errors="replace").strip().upper()
            if cmd.startswith(("EHLO", "HELO")):
                self.wfile.write(b"250 test\r\n")
            elif cmd == "DATA":
                self.wfile.write(b"354 go on\r\n")
                body = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    body += chunk
                self.server.messages.append(email.message_from_bytes(body))  # type: ignore[attr-defined]
                self.wfile.write(b"250 queued\r\n")
            elif cmd == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:  # MAIL FROM, RCPT TO, RSET, NOOP
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture
def smtp() -> Iterator[tuple[int, list[Message]]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Smtp)
    server.messages = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], server.messages  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def _config(tmp_path: Path, smtp_port: int) -> Path:
    """The shipped file with short timers, the daemon's webhook pointed at a closed port
    and the mail server at the local one (no TLS or password there)."""
    config = yaml.safe_load(CONFIG.read_text())
    config["templates"] = [str(TEMPLATES / "*.tmpl")]
    config["route"].update(group_wait="1s", group_interval="1s")
    for child in config["route"]["routes"]:
        child.update(group_wait="1s", group_interval="1s")
    receivers = {r["name"]: r for r in config["receivers"]}
    token = tmp_path / "token"
    token.write_text("t")
    for hook in receivers["regulator"]["webhook_configs"]:
        hook["url"] = f"http://127.0.0.1:{free_port()}/v1/alerts"
        hook["http_config"]["authorization"]["credentials_file"] = str(token)
    [mail] = receivers["operators"]["email_configs"]
    assert "{{ template" in mail["headers"]["Subject"] and "{{ template" in mail["text"]
    for key in ("auth_username", "auth_password_file"):
        mail.pop(key)
    mail.update(smarthost=f"127.0.0.1:{smtp_port}", require_tls=False)
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def alertmanager(tmp_path: Path, smtp: tuple[int, list[Message]]) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "am.log").open("wb")
    proc = subprocess.Popen(
        [
            str(BINARY),
            f"--config.file={_config(tmp_path, smtp[0])}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError((tmp_path / "am.log").read_text()) from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _alert(name: str, device: str, severity: str, recalibrate: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "labels": {
            "alertname": name,
            "device": device,
            "instance": "127.0.0.1:9890",
            "job": "regulator",
            "severity": severity,
            "recalibrate": recalibrate,
        },
        "annotations": {"summary": f"{name} on {device}", "description": "from the test"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=10)).isoformat(),
    }


def _post(url: str, alerts: list[dict[str, Any]]) -> None:
    req = urllib.request.Request(
        f"{url}/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


def _alerts(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as resp:
        out: list[dict[str, Any]] = json.load(resp)
        return out


def _wait(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
    return value


def test_low_accuracy_inhibits_the_drift_warning_of_its_device(alertmanager: str) -> None:
    _post(
        alertmanager,
        [
            _alert("RegulatorAccuracyLow", "chip0", "critical", "true"),
            _alert("RegulatorDriftDetected", "chip0", "warning", "true"),
            _alert("RegulatorDriftDetected", "chip1", "warning", "true"),
        ],
    )

    def states() -> dict[tuple[str, str], dict[str, Any]] | None:
        got = {(a["labels"]["alertname"], a["labels"]["device"]): a for a in _alerts(alertmanager)}
        return got if len(got) == 3 else None

    def inhibited() -> dict[tuple[str, str], dict[str, Any]] | None:
        got = states()
        if got and got[("RegulatorDriftDetected", "chip0")]["status"]["inhibitedBy"]:
            return got
        return None

    got = _wait(inhibited, 20, "the inhibition")
    assert got[("RegulatorDriftDetected", "chip0")]["status"]["state"] == "suppressed"
    assert got[("RegulatorDriftDetected", "chip1")]["status"]["inhibitedBy"] == []
    assert got[("RegulatorAccuracyLow", "chip0")]["status"]["state"] == "active"


def test_people_get_mail_written_by_the_template(
    alertmanager: str, smtp: tuple[int, list[Message]]
) -> None:
    _post(alertmanager, [_alert("RegulatorPowerOverBudget", "chip7", "warning", "false")])
    messages = smtp[1]
    _wait(lambda: messages, 30, "a mail to the operators")
    msg = messages[0]
    assert msg["Subject"] == "[FIRING x1] RegulatorPowerOverBudget on chip7 (warning)"
    body = msg.get_payload(decode=True) if not msg.is_multipart() else None
    text = (
        body.decode()
        if isinstance(body, bytes)
        else "".join(
            str(p.get_payload(decode=True).decode())
            for p in msg.walk()
            if p.get_content_type() == "text/plain"
        )
    )
    assert "FIRING: RegulatorPowerOverBudget on chip7" in text
    assert "device:   chip7" in text and "severity: warning" in text
