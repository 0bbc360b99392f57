"""deploy/prometheus: the real promtool accepts the config and rules, and the rule unit
tests (deploy/prometheus/tests/*.yml) pass; every alert carries what Alertmanager and
the daemon rely on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "deploy" / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*.yml"))

# Alerts that ask the daemon to recalibrate: the model no longer fits the world.
RECALIBRATING = {"RegulatorDriftDetected", "RegulatorOODHigh", "RegulatorAccuracyLow"}
# One alert at least for each condition the operations issue names.
REQUIRED = RECALIBRATING | {
    "RegulatorPowerOverBudget",
    "RegulatorLayerSilent",
    "RegulatorLayerSaturated",
    "RegulatorRecalibrationsFailing",
    "RegulatorCalibrationSamplesNeeded",
    "RegulatorDown",
    "RegulatorNoSamples",
}

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not on PATH (Debian package: prometheus)",
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def _alerts() -> list[dict[str, Any]]:
    rules = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [r for r in group["rules"] if "alert" in r]
    return rules


@needs_promtool
def test_promtool_check_config() -> None:
    result = _promtool("check", "config", str(PROM / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    # The config's rule_files glob really picks up the rule files.
    assert f"{len(RULE_FILES)} rule files found" in result.stdout


@needs_promtool
def test_promtool_check_rules() -> None:
    result = _promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_test_rules() -> None:
    assert TEST_FILES
    result = _promtool("test", "rules", *map(str, TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_labelled_and_described() -> None:
    alerts = _alerts()
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert set(names) >= REQUIRED
    for alert in alerts:
        labels, notes = alert.get("labels", {}), alert.get("annotations", {})
        assert labels.get("severity") in {"critical", "warning", "info"}, alert["alert"]
        # Exactly the string "true" or "false": Alertmanager matches label text.
        expected = "true" if alert["alert"] in RECALIBRATING else "false"
        assert labels.get("recalibrate") == expected, alert["alert"]
        if expected == "true":
            assert labels.get("regulator_action") == "recalibrate_supervised", alert["alert"]
        else:
            assert "regulator_action" not in labels, alert["alert"]
        assert notes.get("summary") and notes.get("description"), alert["alert"]


def test_every_alert_has_a_unit_test() -> None:
    tested: set[str] = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    tested.add(check["alertname"])
    untested = {a["alert"] for a in _alerts()} - tested
    assert not untested, f"alerts without a firing promtool test: {sorted(untested)}"
