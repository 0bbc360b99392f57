"""What a build says about itself on /metrics: ``regulator_build_info``, process metrics,
and an exposition that promtool's linter passes (``--version``: tests/test_cli.py)."""

from __future__ import annotations

import platform
import shutil
import subprocess
from importlib import metadata

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from regulator.service.metrics import Metrics

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (scripts/setup.sh --test)"
)


def test_build_info_and_process_metrics_are_exported() -> None:
    reg = CollectorRegistry()
    Metrics(reg, "chip-7")
    labels = {
        "device": "chip-7",
        "version": metadata.version("regulator"),
        "python": platform.python_version(),
        "torch": metadata.version("torch"),
        "norse": metadata.version("norse"),
    }
    assert reg.get_sample_value("regulator_build_info", labels) == 1.0
    rss = reg.get_sample_value("process_resident_memory_bytes")
    assert rss is not None and rss > 10e6  # this test process holds torch: tens of MB
    cpu = reg.get_sample_value("process_cpu_seconds_total")
    assert cpu is not None and cpu > 0


def test_process_metrics_can_be_left_out() -> None:
    reg = CollectorRegistry()
    Metrics(reg, "chip-7", process=False)
    assert reg.get_sample_value("process_resident_memory_bytes") is None


@needs_promtool
def test_promtool_lints_the_exposition_clean() -> None:
    reg = CollectorRegistry()
    m = Metrics(reg, "chip-7")
    m.set_model("v000001", prior="nanosensor")
    m.init_recalibration_series(["drift", "manual"])
    for layer, density in (("h0", 0.1), ("h1", 0.0)):
        m.spike_density.labels(layer=layer).set(density)
        m.layer_silent.labels(layer=layer).set(1.0 if layer == "h1" else 0.0)
    m.drift_alarms.inc()
    m.drift_raw_alarms.inc(3)
    m.chip_age.set(12.5)
    m.set_drift_explanation({"3": (0.8, 4.0), "0-2": (None, 0.1)}, {"hidden0": 1.0})
    text = generate_latest(reg)
    for name in ("drift_input_share", "drift_input_shift", "drift_layer_share"):
        assert f"regulator_{name}{{".encode() in text  # the explanation series are linted too
    res = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60
    )
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), (
        res.stdout.decode() + res.stderr.decode()
    )


def test_drift_explanation_series_follow_the_latest_detection() -> None:
    reg = CollectorRegistry()
    m = Metrics(reg, "chip-7", process=False)
    m.set_drift_explanation({"3": (0.8, 4.0), "5": (0.2, 0.5)}, {"hidden0": 1.0})
    share = {"device": "chip-7", "input": "3"}
    assert reg.get_sample_value("regulator_drift_input_share", share) == 0.8
    m.set_drift_explanation({"5": (1.0, 2.0)}, {"hidden1": 1.0})  # a later detection
    assert reg.get_sample_value("regulator_drift_input_share", share) is None  # bounded set
    assert reg.get_sample_value("regulator_drift_input_shift", {**share, "input": "5"}) == 2.0
    gone = {"device": "chip-7", "layer": "hidden0"}
    assert reg.get_sample_value("regulator_drift_layer_share", gone) is None
