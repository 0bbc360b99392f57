"""grafana/: dashboards are valid JSON whose every panel queries only the daemon's
metrics, Prometheus's `up`, or recording rules from deploy/prometheus; provisioning
points at the data source uid the dashboards use."""

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
    "regulator_dense_ann_energy_joules_total",
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
    uid = _datasource_uid()
    for panel in panels:
        if panel["type"] == "row":
            continue
        title = panel["title"]
        assert panel.get("targets"), f"{title}: no targets"
        assert panel["datasource"]["uid"] == uid, title
        for target in panel["targets"]:
            expr = target["expr"]
            names = metric_names(expr)
            # `up` is Prometheus's own series, per target: it has no device label.
            if names != {"up"}:
                assert "$device" in expr, f"{title}: not filtered by the device variable"
            assert names, f"{title}: no metric in {expr!r}"
            assert names <= ALLOWED, f"{title}: unknown metrics {names - ALLOWED}"
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            assert metric_names(annotation["expr"]) <= ALLOWED, annotation["name"]


def test_device_dashboard_marks_recalibrations() -> None:
    dashboard = json.loads((REPO / "grafana" / "dashboards" / "regulator-device.json").read_text())
    exprs = [a.get("expr", "") for a in dashboard["annotations"]["list"]]
    assert any("regulator_recalibrations_total" in e for e in exprs)


def test_dashboard_provider_loads_json_files() -> None:
    config = yaml.safe_load((PROVISIONING / "dashboards" / "regulator.yaml").read_text())
    (provider,) = config["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
