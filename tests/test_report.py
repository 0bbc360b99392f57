"""regulator report: PNGs from an event log or a replay report, opened and checked."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import image as mpimg

from regulator.cli import main
from regulator.errors import DataFormatError, InputError
from regulator.report import load_run, write_report

ALL = ["timeline.png", "accuracy.png", "ood.png", "energy.png", "spike_density.png"]


def _event(ts: float, kind: str, **fields: Any) -> dict[str, Any]:
    return {"ts": ts, "kind": kind, "fields": fields}


def _recal(ts: float, outcome: str, t_s: float, learning_j: float = 2e-4) -> dict[str, Any]:
    return _event(
        ts,
        "recalibration",
        trigger="alert",
        mode="supervised",
        outcome=outcome,
        reason="held-out accuracy",
        t_s=t_s,
        seconds=1.5,
        version="v000002",
        evaluation={"n_holdout": 12, "serving": 0.4, "candidate": 0.9},
        cost={"learning_energy_j": learning_j, "steps": 20},
    )


def _events(snapshots: bool) -> list[dict[str, Any]]:
    t0 = 1_800_000_000.0
    ev = [_event(t0, "startup", version="v000001", device="chip0")]
    e_inf = e_learn = 0.0
    for i in range(1, 121):
        t = t0 + i
        shifted = 40 <= i < 70
        if snapshots:
            e_inf += 1e-5
            e_learn += 2e-4 if i == 70 else 0.0
            ev.append(
                _event(
                    t,
                    "snapshot",
                    t_s=float(i),
                    accuracy=0.45 if shifted else 0.9,
                    ood_p_value=0.003 if shifted else 0.3 + 0.2 * math.sin(i),
                    ood_threshold=0.01,
                    spike_density={"0": 0.05 + 0.01 * math.sin(i / 5), "1": 0.12},
                    power_w=0.002 + (0.05 if i == 70 else 0.0),
                    energy_inference_j=e_inf,
                    energy_learning_j=e_learn,
                    version="v000001",
                )
            )
        if i == 42:
            ev.append(_event(t, "detection", t_s=float(i), sample=840, version="v1", statistic=9.3))
        if i == 45:
            ev.append(
                _event(
                    t,
                    "alert",
                    alertname="RegulatorDriftDetected",
                    status="firing",
                    action="recalibrate",
                )
            )
        if i == 46:
            ev.append(_recal(t, "skipped", float(i), 0.0))
        if i == 70:
            ev.append(_recal(t, "accepted", float(i)))
        if i == 100:
            ev.append(_event(t, "rollback", trigger="http", ok=True, old="v2", new="v1"))
    ev.append(_event(t0 + 121, "shutdown", version="v000001"))
    return ev


def _write_jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def _replay_report() -> dict[str, Any]:
    rec = _recal(0.0, "accepted", 31.0)["fields"]
    rejected = _recal(0.0, "rejected", 80.0, 1.5e-4)["fields"]
    return {
        "policy_device": "chip0",
        "files": ["a/day1.npz", "a/day2.npz", "a/day3.npz"],
        "samples": 1800,
        "wall_seconds": 12.0,
        "simulated_seconds": 90.0,
        "segments": [
            {
                "file": "a/day1.npz",
                "samples": 600,
                "first_sample": 0,
                "labels_revealed": 0,
                "accuracy": 0.91,
                "detections": [],
                "recalibrations": [],
                "inference_energy_j": 0.012,
                "model_version_at_end": "v000001",
            },
            {
                "file": "a/day2.npz",
                "samples": 600,
                "first_sample": 600,
                "labels_revealed": 0,
                "accuracy": 0.62,
                "detections": [
                    {"t_s": 30.5, "sample": 611, "version": "v000001", "delay_samples": 10}
                ],
                "recalibrations": [rec],
                "inference_energy_j": 0.011,
                "model_version_at_end": "v000002",
            },
            {
                "file": "a/day3.npz",
                "samples": 600,
                "first_sample": 1200,
                "labels_revealed": 0,
                "accuracy": 0.84,
                "detections": [
                    {"t_s": 79.0, "sample": 1580, "version": "v000002", "delay_samples": 380}
                ],
                "recalibrations": [rejected],
                "inference_energy_j": 0.013,
                "model_version_at_end": "v000002",
            },
        ],
        "recalibrations": [rec, rejected],
        "detections": [
            {"t_s": 30.5, "sample": 611, "version": "v000001"},
            {"t_s": 79.0, "sample": 1580, "version": "v000002"},
        ],
        "energy_j": {"inference": 0.036, "learning": 3.5e-4},
        "events": [
            _event(1e9, "startup", version="v000001"),
            _event(1e9 + 0.1, "detection", t_s=30.5, sample=611, statistic=8.0),
        ],
    }


def _check_png(path: Path) -> None:
    """A real PNG of plot size whose pixels are not all one colour."""
    assert path.exists() and path.stat().st_size > 5_000, path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    h, w = img.shape[:2]
    assert w >= 600 and h >= 300, (path.name, img.shape)
    rgb = np.asarray(img[..., :3], dtype=float)
    assert rgb.var() > 1e-4, f"{path.name} is blank"
    # Drawn content, not only the white background: a fair number of non-white pixels.
    assert (rgb.min(axis=-1) < 0.9).mean() > 0.01, f"{path.name} has almost nothing drawn"


def test_event_log_with_snapshots_gives_every_plot(tmp_path: Path) -> None:
    src = _write_jsonl(tmp_path / "events.jsonl", _events(snapshots=True))
    paths = write_report(src, tmp_path / "out")
    assert [p.name for p in paths] == ALL
    for p in paths:
        _check_png(p)


def test_event_log_without_snapshots_plots_what_it_holds(tmp_path: Path) -> None:
    src = _write_jsonl(tmp_path / "events.jsonl", _events(snapshots=False))
    paths = write_report(src, tmp_path / "out")
    # No per-sample series: held-out accuracies, detector statistics, learning energy.
    assert [p.name for p in paths] == ["timeline.png", "accuracy.png", "ood.png", "energy.png"]
    for p in paths:
        _check_png(p)
    run = load_run(src)
    assert [r["outcome"] for r in run.recalibrations] == ["skipped", "accepted"]
    assert run.recalibrations[1]["t"] == pytest.approx(70.0)
    assert ("rollback", 100.0) in {(k, t) for t, k in run.marks}


def test_event_log_torn_last_line_is_skipped(tmp_path: Path) -> None:
    src = _write_jsonl(tmp_path / "events.jsonl", _events(snapshots=True))
    with src.open("a") as f:
        f.write('{"ts": 1800000200.0, "kind": "snap')
    assert len(write_report(src, tmp_path / "out")) == len(ALL)


def test_replay_report(tmp_path: Path) -> None:
    src = tmp_path / "report.json"
    src.write_text(json.dumps(_replay_report()))
    paths = write_report(src, tmp_path / "out")
    assert [p.name for p in paths] == ["timeline.png", "accuracy.png", "ood.png", "energy.png"]
    for p in paths:
        _check_png(p)
    run = load_run(src)
    assert run.time_label == "simulated seconds"
    assert [s["start"] for s in run.segments] == [0.0, 30.0, 60.0]
    assert [r["t"] for r in run.recalibrations] == [31.0, 80.0]


def test_cli_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write_jsonl(tmp_path / "events.jsonl", _events(snapshots=True))
    assert main(["report", str(src), "--out", str(tmp_path / "png")]) == 0
    printed = capsys.readouterr().out.split()
    assert [Path(p).name for p in printed] == ALL


@pytest.mark.parametrize(
    ("content", "error"),
    [("", DataFormatError), ("not json\n", DataFormatError), ("[1, 2]", DataFormatError)],
)
def test_bad_inputs(tmp_path: Path, content: str, error: type[Exception]) -> None:
    src = tmp_path / "x.json"
    src.write_text(content)
    with pytest.raises(error):
        write_report(src, tmp_path / "out")


def test_missing_input_exits_2(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        load_run(tmp_path / "nope.jsonl")
    assert main(["report", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path)]) == 2
