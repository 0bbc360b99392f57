"""``regulator fleet`` on a local 2-CPU Ray instance: four chips, one shifted (only it
recalibrates, every series labelled with its own device), one actor killed with
SIGKILL and restarted from its state directory with its versions and labels intact,
and bad fleet files refused with exit 2 naming the device and the field."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from regulator.fleet.config import load_fleet
from regulator.fleet.supervisor import FleetSupervisor, RoundResult
from tests.service.conftest import policy_dict

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SHIFTED = "chip4"
STEADY = ("chip1", "chip2", "chip3")  # seeds whose environment raises no false alarm
# The service tests' quiet policy on the shipped prior, with a drift rule; the fleet
# file sets each device's id and seed.
BASE_POLICY = {
    k: v
    for k, v in policy_dict(
        Path("models/nanosensor"),
        rules=[
            {
                "name": "drift",
                "condition": {"signal": "drift_detected"},
                "action": "recalibrate_supervised",
            }
        ],
        logging={"level": "WARNING"},
    ).items()
    if k != "device"
}


def write_fleet(tmp: Path, devices: list[dict[str, Any]], **extra: Any) -> Path:
    (tmp / "base.yaml").write_text(yaml.safe_dump(BASE_POLICY))
    data = {
        "base_policy": "base.yaml",
        "state_root": str(tmp / "state"),
        "targets_file": str(tmp / "targets.json"),
        "samples_per_round": 100,
        "devices": devices,
        **extra,
    }
    path = tmp / "fleet.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def fleet(ray_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("fleet")
    devices: list[dict[str, Any]] = [{"id": d, "seed": int(d[-1])} for d in STEADY]
    # The shift comes at 15 s (sample 300) of simulated time.
    devices.append(
        {"id": SHIFTED, "seed": 4, "schedule": {"kind": "abrupt", "period_s": 15, "magnitude": 2}}
    )
    sup = FleetSupervisor(load_fleet(write_fleet(tmp, devices)))
    sup.start()
    rounds = [sup.round() for _ in range(4)]
    try:
        yield sup, rounds
    finally:
        sup.shutdown()


def scrape(target: str) -> list[str]:
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=10) as r:
        text = r.read().decode()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_only_the_shifted_chip_recalibrates(fleet: Any) -> None:
    _, rounds = fleet
    last: RoundResult = rounds[-1]
    assert set(last.reports) == {*STEADY, SHIFTED}
    assert all(rep["served"] == 400 for rep in last.reports.values())
    shifted = last.reports[SHIFTED]
    assert shifted["recalibrations"] >= 1 and shifted["swaps"] >= 1
    assert len(shifted["versions"]) >= 2
    for dev in STEADY:
        rep = last.reports[dev]
        assert rep["recalibrations"] == 0, (dev, rep)
        assert list(rep["versions"]) == ["v000001"], (dev, rep)


def test_every_series_carries_its_own_device(fleet: Any) -> None:
    sup, _ = fleet
    targets = json.loads(sup.fleet.targets_file.read_text())
    assert sorted(t["labels"]["device"] for t in targets) == sorted([*STEADY, SHIFTED])
    for entry in targets:
        dev = entry["labels"]["device"]
        (target,) = entry["targets"]
        lines = scrape(target)
        families = {line.split("{")[0].split(" ")[0] for line in lines}
        assert len(families) > 40, (dev, len(families))
        for line in lines:  # process_* get their device from the target's labels
            assert f'device="{dev}"' in line or line.startswith("process_"), (dev, line)
        recal = [
            float(line.rsplit(" ", 1)[1])
            for line in lines
            if line.startswith("regulator_recalibrations_total{")
        ]
        assert (sum(recal) > 0) == (dev == SHIFTED), (dev, recal)


def test_a_killed_actor_restarts_with_its_versions_and_labels(fleet: Any) -> None:
    sup, rounds = fleet
    before = rounds[-1].reports
    old_target = sup.targets[SHIFTED]
    os.kill(sup.pid(SHIFTED), signal.SIGKILL)
    res = sup.round()
    assert res.restarted == [SHIFTED]
    after = res.reports[SHIFTED]
    assert after["versions"] == before[SHIFTED]["versions"]
    assert after["version"] == before[SHIFTED]["version"]
    assert after["labels"] >= before[SHIFTED]["labels"] > 0
    assert after["served"] == before[SHIFTED]["served"]  # the killed round is served again
    for dev in STEADY:  # the rest of the fleet served on
        assert res.reports[dev]["served"] == before[dev]["served"] + 100
    # Served on from where it stopped; its new port is in the targets file.
    nxt = sup.round().reports[SHIFTED]
    assert nxt["served"] == after["served"] + 100
    assert nxt["versions"][: len(after["versions"])] == after["versions"]
    targets = {
        t["labels"]["device"]: t["targets"][0]
        for t in json.loads(sup.fleet.targets_file.read_text())
    }
    assert targets[SHIFTED] == sup.targets[SHIFTED] != old_target
    assert any(line.startswith("regulator_samples_total") for line in scrape(targets[SHIFTED]))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "regulator.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_bad_fleet_file_exits_2_naming_device_and_field(tmp_path: Path) -> None:
    path = write_fleet(
        tmp_path,
        [
            {"id": "good", "seed": 1},
            {"id": "bad-seed", "seed": -1},
            {"id": "bad-policy", "policy": {"recalibration": {"k_shot": 0}}},
            {"id": "typo", "policy": {"monitors": {"no_such_field": 1}}},
        ],
    )
    got = _cli("fleet", str(path), "--check")
    assert got.returncode == 2, got
    assert "devices.1 (bad-seed): seed" in got.stderr, got.stderr
    assert "Traceback" not in got.stderr
    path = write_fleet(
        tmp_path,
        [
            {"id": "good", "seed": 1},
            {"id": "bad-policy", "policy": {"recalibration": {"k_shot": 0}}},
            {"id": "typo", "policy": {"monitors": {"no_such_field": 1}}},
        ],
    )
    got = _cli("fleet", str(path), "--check")
    assert got.returncode == 2, got
    assert "devices.1 (bad-policy): policy.recalibration.k_shot" in got.stderr, got.stderr
    assert "devices.2 (typo): policy.monitors.no_such_field" in got.stderr, got.stderr
    path = write_fleet(tmp_path, [{"id": "good", "seed": 1}])
    got = _cli("fleet", str(path), "--check")
    assert got.returncode == 0, got
    assert "valid fleet of 1 devices" in got.stdout


def test_the_shipped_fleet_file_is_valid() -> None:
    fleet = load_fleet(REPO / "deploy" / "fleet" / "fleet.yaml")
    assert list(fleet.policies) == ["chip1", "chip2", "chip3", "chip4"]
    chip4 = fleet.policies["chip4"]
    assert (chip4.device.seed, chip4.device.profile, chip4.recalibration.k_shot) == (
        4,
        "memristive",
        3,
    )
    assert fleet.policies["chip1"].rules == chip4.rules  # the base policy's


# Queries that may rightly be empty here: annotations look 1 minute back (the shifted
# chip's recalibration may be older), and no sample is rejected in this run.
MAY_BE_EMPTY = ("changes(", "samples_rejected")


@pytest.mark.e2e
def test_prometheus_scrapes_every_device_and_the_fleet_dashboard_answers(
    fleet: Any, tmp_path: Path
) -> None:
    from tests.e2e import promstack

    if promstack.missing_binaries():
        pytest.skip(f"not installed: {promstack.missing_binaries()}")
    sup, _ = fleet
    targets = json.loads(sup.fleet.targets_file.read_text())
    addresses = [t["targets"][0] for t in targets]
    devices = sorted(t["labels"]["device"] for t in targets)
    with promstack.start(tmp_path, scrape_targets=addresses) as stack:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the fleet serves while Prometheus scrapes
            sup.round(20)
            time.sleep(0.5)
            if len(stack.query('up{job="regulator"} == 1')) == len(devices) and len(
                stack.query("device:regulator_samples:rate1m > 0")
            ) == len(devices):
                break
        assert len(stack.query('up{job="regulator"} == 1')) == len(devices)
        got = {r["metric"]["device"] for r in stack.query("regulator_samples_total")}
        assert sorted(got) == devices
        dashboard = promstack.GRAFANA / "dashboards" / "regulator-fleet.json"
        empty = []
        for where, expr in promstack.dashboard_queries(dashboard, ".*"):
            result = stack.query(expr)  # a StackError fails the test with its message
            if not result and not any(k in expr for k in MAY_BE_EMPTY):
                empty.append(f"{where}: {expr}")
            for r in result:
                assert r["metric"].get("device", devices[0]) in devices, (where, r)
        assert not empty, "fleet panels without data:\n" + "\n".join(empty)
