"""A drift alarm explains itself: a shift of one known sensor ranks that sensor first, in
/v1/status' runtime status, the event log, the metrics and the replay detections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from regulator.meta.model import ModelBundle
from regulator.policy.model import Policy
from regulator.service.runtime import Runtime
from regulator.tasks.base import make_family
from tests.service.conftest import policy_dict

DEV = {"device": "dev-test"}


@pytest.mark.parametrize("sensor", [1, 6])
def test_a_shifted_sensor_ranks_first(tmp_path: Path, tiny_prior: Path, sensor: int) -> None:
    clock = [0.0]
    policy = Policy.model_validate(
        policy_dict(tiny_prior, monitors={"mean_samples_between_false_alarms": 1e6})
    )
    rt = Runtime(policy, tmp_path / "state", clock=lambda: clock[0], inline_jobs=True)
    try:
        fam = make_family("nanosensor")
        rng = np.random.default_rng(sensor)
        x, _ = fam.sample(fam.nominal_environment(), 400, rng)
        scale = ModelBundle.load(tiny_prior).normaliser.scale
        assert scale is not None
        x[200:, sensor, :] += 5.0 * scale[sensor]  # one sensor drifts by 5 of its scales
        for i, row in enumerate(x):
            clock[0] = i * 0.05
            rt.process(f"s{i}", row)
        reg = rt.metrics_registry
        assert len(rt.detections) == 1 and rt.detections[0]["sample"] > 200
        assert reg.get_sample_value("regulator_drift_alarms_total", DEV) == 1.0  # one episode
        raw = reg.get_sample_value("regulator_drift_raw_alarms_total", DEV)
        assert raw is not None and raw >= 1.0

        drift = rt.status()["drift"]
        expl = drift["explanation"]
        assert drift["detections"] == 1 and drift["threshold"] > 0
        assert expl["channels"][0]["name"] == str(sensor), expl["channels"][:3]
        assert expl["channels"][0]["shift"] > 2.0  # in the sensor's in-distribution scales
        shares = [c["ood_share"] for c in expl["channels"]]
        assert shares[0] == max(shares) and sum(shares) == pytest.approx(1.0)
        assert len(expl["channels"]) == x.shape[1]  # 8 sensors: one group each
        layers = expl["layers"]
        assert [la["layer"] for la in layers] == ["hidden0"]
        assert sum(la["ood_share"] for la in layers) == pytest.approx(1.0)

        top = reg.get_sample_value("regulator_drift_input_share", {**DEV, "input": str(sensor)})
        others = [
            reg.get_sample_value("regulator_drift_input_share", {**DEV, "input": str(c)})
            for c in range(x.shape[1])
            if c != sensor
        ]
        assert top is not None and all(o is not None and o < top for o in others)
        assert reg.get_sample_value("regulator_drift_layer_share", {**DEV, "layer": "hidden0"})
        stat = reg.get_sample_value("regulator_drift_statistic", DEV)
        thr = reg.get_sample_value("regulator_drift_threshold", DEV)
        assert stat is not None and thr == pytest.approx(drift["threshold"])

        [event] = [e for e in rt.state.events.read_all() if e["kind"] == "detection"]
        assert event["fields"]["explanation"]["channels"][0]["name"] == str(sensor)
    finally:
        rt.close()


def test_explaining_does_not_change_what_is_served(tmp_path: Path, tiny_prior: Path) -> None:
    """The occlusion forwards run on a saved copy of the chip's noise state."""
    fam = make_family("nanosensor")
    x, _ = fam.sample(fam.nominal_environment(), 40, np.random.default_rng(0))
    outs = []
    for k, explain in enumerate((False, True)):
        policy = Policy.model_validate(policy_dict(tiny_prior))
        rt = Runtime(policy, tmp_path / f"s{k}", clock=lambda: 0.0, inline_jobs=True)
        try:
            first = [rt.process(f"a{i}", row)["outputs"] for i, row in enumerate(x[:20])]
            if explain:
                rt.explain(20)
                assert rt.explanation is not None
            rest = [rt.process(f"b{i}", row)["outputs"] for i, row in enumerate(x[20:])]
            outs.append(first + rest)
        finally:
            rt.close()
    assert outs[0] == outs[1]
