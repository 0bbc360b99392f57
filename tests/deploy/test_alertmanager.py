"""deploy/alertmanager: the real amtool accepts the config and routes alerts that ask
for a recalibration to the daemon's webhook, with the bearer token from a file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"

needs_amtool = pytest.mark.skipif(
    shutil.which("amtool") is None,
    reason="amtool not on PATH (Debian package: prometheus-alertmanager)",
)


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["amtool", *args], capture_output=True, text=True, timeout=60)


@needs_amtool
def test_amtool_check_config() -> None:
    result = _amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_amtool
@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (
            ["alertname=RegulatorDriftDetected", "recalibrate=true", "device=chip0"],
            "regulator,operators",
        ),
        (
            ["alertname=RegulatorAccuracyLow", "recalibrate=true", "severity=critical"],
            "regulator,operators",
        ),
        (["alertname=RegulatorDown", "recalibrate=false"], "operators"),
        (["alertname=SomethingElse"], "operators"),
    ],
)
def test_routes(labels: list[str], receivers: str) -> None:
    result = _amtool("config", "routes", "test", f"--config.file={CONFIG}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receivers


def test_webhook_and_storm_control() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    route = config["route"]
    assert {"alertname", "device"} <= set(route["group_by"])
    regulator = next(r for r in config["receivers"] if r["name"] == "regulator")
    (hook,) = regulator["webhook_configs"]
    assert hook["url"].endswith("/v1/alerts")
    assert hook["send_resolved"] is True
    auth = hook["http_config"]["authorization"]
    assert auth.get("type", "Bearer") == "Bearer"
    assert auth["credentials_file"].startswith("/")
    assert "credentials" not in auth, "the token belongs in a file, not in the config"
    child = next(r for r in route["routes"] if r["receiver"] == "regulator")
    assert child["matchers"] == ['recalibrate="true"']
