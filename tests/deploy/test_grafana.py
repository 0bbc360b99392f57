"""grafana/: dashboards are valid JSON whose every panel queries only the daemon's
metrics, Prometheus's `up`, or recording rules from deploy/prometheus, through a data
source variable (and ``__inputs`` for import); every panel says what it shows; the
thresholds drawn are the alert rules' and the policy defaults'; both dashboards mark
detections and recalibrations."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
PROVISIONING = REPO / "grafana" / "provisioning"

DAEMON_METRICS = {
    "regulator_samples_total", "regulator_samples_rejected_total",
    "regulator_spike_density", "regulator_synaptic_ops_total",
    "regulator_energy_joules_total", "regulator_power_watts", "regulator_ood_score",
    "regulator_drift_detected", "regulator_drift_alarms_total", "regulator_accuracy",
    "regulator_recalibrations_total", "regulator_model_info",
    "regulator_policy_reload_failures_total", "regulator_calibration_samples_needed",
    "regulator_ood_threshold", "regulator_layer_silent", "regulator_layer_saturated",
    "regulator_dense_ann_energy_joules_total", "regulator_drift_raw_alarms_total",
    "regulator_drift_statistic", "regulator_drift_threshold", "regulator_drift_input_share",
    "regulator_drift_input_shift", "regulator_drift_layer_share",
}  # fmt: skip
HISTOGRAMS = {"regulator_inference_seconds", "regulator_recalibration_seconds"}
HISTOGRAM_SERIES = {f"{h}_{s}" for h in HISTOGRAMS for s in ("bucket", "sum", "count")}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
}  # fmt: skip


def _recording_rules() -> set[str]:
    names = set()
    for path in (REPO / "deploy" / "prometheus" / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {r["record"] for r in group["rules"] if "record" in r}
    return names


ALLOWED = DAEMON_METRICS | HISTOGRAM_SERIES | _recording_rules() | {"up"}


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions, keywords,
    label names (in braces or in by/on/... lists), strings, numbers or durations.

    >>> sorted(metric_names('sum by (device) (rate(x_total{a="b"}[5m])) > on(device) y'))
    ['x_total', 'y']
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function
        if word.lower() in PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for panel in panels:
        found.append(panel)
        found += _panels(panel.get("panels", []))
    return found


def _datasource_uid() -> str:
    config = yaml.safe_load((PROVISIONING / "datasources" / "regulator.yaml").read_text())
    (source,) = config["datasources"]
    assert source["type"] == "prometheus"
    uid: str = source["uid"]
    return uid


def test_both_dashboards_are_there() -> None:
    uids = {json.loads(p.read_text())["uid"] for p in DASHBOARDS}
    assert uids == {"regulator-fleet", "regulator-device"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    panels = _panels(dashboard["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "device" in variables
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    [needed] = dashboard["__inputs"]
    assert needed["type"] == "datasource" and needed["pluginId"] == "prometheus"
    assert ds["current"]["value"] == "${" + needed["name"] + "}"  # filled in on import
    assert variables["device"]["datasource"]["uid"] == "${datasource}"
    for panel in panels:
        if panel["type"] == "row":
            continue
        title = panel["title"]
        assert panel.get("targets"), f"{title}: no targets"
        assert len(panel.get("description", "")) > 20, f"{title}: no description"
        assert panel["datasource"]["uid"] == "${datasource}", title
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", title
            expr = target["expr"]
            names = metric_names(expr)
            # `up` is Prometheus's own series, per target: it has no device label.
            if names != {"up"}:
                assert "$device" in expr, f"{title}: not filtered by the device variable"
            assert names, f"{title}: no metric in {expr!r}"
            assert names <= ALLOWED, f"{title}: unknown metrics {names - ALLOWED}"
    marks = {a["name"]: a for a in dashboard["annotations"]["list"] if "expr" in a}
    for annotation in marks.values():
        assert metric_names(annotation["expr"]) <= ALLOWED, annotation["name"]
        assert annotation["datasource"]["uid"] == "${datasource}"
        assert "$device" in annotation["expr"]
    assert "regulator_recalibrations_total" in marks["Recalibrations"]["expr"]
    assert "regulator_drift_alarms_total" in marks["Drift detections"]["expr"]


def _alert_threshold(name: str) -> float:
    """The number an alert rule compares with (``expr: ... < 0.7``)."""
    rules = yaml.safe_load(
        (REPO / "deploy" / "prometheus" / "rules" / "regulator-alerts.yml").read_text()
    )
    [rule] = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == name]
    return float(re.split(r"[<>]=?", rule["expr"])[-1])


def _steps(panel: dict[str, Any]) -> list[float]:
    return [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"][1:]]


def _by_title(name: str) -> dict[str, dict[str, Any]]:
    dashboard = json.loads((REPO / "grafana" / "dashboards" / name).read_text())
    return {p["title"]: p for p in _panels(dashboard["panels"])}


def test_thresholds_are_the_alert_rules_and_policy_defaults() -> None:
    from regulator.policy.model import MonitorsConfig, load_policy

    accuracy = _alert_threshold("RegulatorAccuracyLow")
    budget = _alert_threshold("RegulatorPowerOverBudget")
    policy = load_policy(REPO / "deploy" / "policies" / "default.yaml")
    [rule] = [r for r in policy.rules if r.condition.signal == "accuracy_below"]
    assert rule.condition.threshold == accuracy  # type: ignore[union-attr]
    fleet, device = _by_title("regulator-fleet.json"), _by_title("regulator-device.json")
    assert _steps(fleet["Accuracy"]) == [accuracy] == _steps(device["Accuracy and drift"])
    assert _steps(fleet["Power"]) == [budget] == _steps(device["Power"])
    m = MonitorsConfig()
    assert _steps(device["Spike density per layer"]) == [m.silent_threshold, m.saturated_threshold]
    for panel in (fleet["Accuracy"], fleet["Power"], device["Spike density per layer"]):
        assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"


def test_energy_panels_say_what_their_ratio_means() -> None:
    for name in ("regulator-fleet.json", "regulator-device.json"):
        [panel] = [
            p
            for p in _by_title(name).values()
            if any("energy_advantage" in t["expr"] for t in p.get("targets", []))
        ]
        text = panel["description"]
        assert "divided by" in text and "Above 1" in text and "below 1" in text
        assert "docs/energy.md" in text and (REPO / "docs" / "energy.md").exists()
        assert _steps(panel) == [1]


def test_datasource_provisioning_is_prometheus() -> None:
    assert _datasource_uid()


def test_device_dashboard_marks_recalibrations() -> None:
    dashboard = json.loads((REPO / "grafana" / "dashboards" / "regulator-device.json").read_text())
    exprs = [a.get("expr", "") for a in dashboard["annotations"]["list"]]
    assert any("regulator_recalibrations_total" in e for e in exprs)


def test_dashboard_provider_loads_json_files() -> None:
    config = yaml.safe_load((PROVISIONING / "dashboards" / "regulator.yaml").read_text())
    (provider,) = config["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
