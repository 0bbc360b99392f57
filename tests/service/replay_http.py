"""Recorded files fed to a real daemon over HTTP the way ``regulator replay`` feeds its
runtime, for the comparison of the two (``test_replay_http.py`` on a slice,
``bench/replay_http.py`` on gas batches 2→5).

The daemon runs the replay policy with ``source: {kind: http, clock: sample}``. The
client plays replay's part: sample ``i`` of the run is pushed alone at ``t = i / rate``
(``POST /v1/samples``, answered with its prediction once served); at each file's start
the same labelled samples as replay's are revealed (``POST /v1/feedback`` with ``x``),
and labels of a replay source's feedback channel (``label_fraction``,
``label_delay_samples``, the same seed) are sent after the sample that makes them due,
at its ``t``. Accuracy per file excludes the revealed samples, as replay's does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from regulator.client import Client
from regulator.policy.model import Policy
from regulator.service.replay import replay_settings, reveal_rows
from regulator.tasks.formats import load_file
from regulator.tasks.sources import SourceSample

__all__ = ["CLIENT_TIMEOUT_S", "daemon_policy", "feed_daemon", "recalibrations", "run_replay_cli"]

CLIENT_TIMEOUT_S = 600.0
"""A push on the samples' clock may wait for a recalibration (up to its ``timeout_s``):
the client waits longer than any policy here sets."""

SAME_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""Replay in one torch thread, as the daemon serves and its worker adapts: a float sum
split over threads may round differently, and a spike threshold could turn that into a
different prediction (a precaution: on gas batches 2→5 replay with torch's default
threads gives the same figures, ``bench/results/replay_http.md``)."""


def daemon_policy(replay_policy: dict[str, Any], queue_size: int = 64) -> dict[str, Any]:
    """The replay policy for a daemon fed over HTTP on the samples' clock."""
    out = dict(replay_policy)
    out["source"] = {"kind": "http", "queue_size": queue_size, "clock": "sample"}
    return out


def run_replay_cli(
    config: Path, files: list[Path], report: Path, cwd: Path, one_thread: bool = True
) -> dict[str, Any]:
    """``regulator replay`` in a child process (one torch thread, unless not
    ``one_thread``); its report."""
    env = {**os.environ, **(SAME_THREADS if one_thread else {})}
    cmd = [sys.executable, "-m", "regulator.cli", "replay", "--config", str(config)]
    cmd += ["--data", *map(str, files), "--report", str(report), "--no-progress"]
    subprocess.run(cmd, check=True, cwd=cwd, env=env, capture_output=True)
    rep: dict[str, Any] = json.loads(report.read_text())
    return rep


def feed_daemon(client: Client, policy: Policy, files: list[Path]) -> list[dict[str, Any]]:
    """Feed ``files`` to the daemon behind ``client`` as replay would; per file:
    ``{"file", "samples", "labels_revealed", "accuracy", "version_at_end"}``."""
    rate, reveal_k, feedback = replay_settings(policy)
    segments: list[dict[str, Any]] = []
    i = 0
    version = ""
    for path in files:
        rec = load_file(path)
        revealed = reveal_rows(rec.y, reveal_k, policy.device.seed + len(segments))
        if revealed.size:
            items = [
                {
                    "sample_id": f"{path.stem}:{r}",
                    "y": rec.y[r].item(),
                    "x": rec.x[r],
                    "t": i / rate,
                }
                for r in revealed
            ]
            client.feedback(items)
        skip = set(revealed.tolist())
        correct: list[float] = []
        for row in range(len(rec.y)):
            t = i / rate
            sid = f"{path.stem}:{row}"
            y = rec.y[row].item()
            feedback.observe(SourceSample(sid, rec.x[row], y, t))
            pushed = client.push_samples([rec.x[row]], ids=[sid], t=[t])
            if pushed.pending or len(pushed.predictions) != 1:
                raise AssertionError(f"sample {sid} not served within the wait: {pushed}")
            out = pushed.predictions[0]
            version = out["version"]
            ready = feedback.pop_ready()
            if ready:
                client.feedback([{"sample_id": s, "y": label, "t": t} for s, label in ready])
            if row not in skip:
                correct.append(float(out["prediction"] == y))
            i += 1
        segments.append(
            {
                "file": str(path),
                "samples": len(rec.y),
                "labels_revealed": int(revealed.size),
                "accuracy": sum(correct) / len(correct) if correct else None,
                "version_at_end": version,
            }
        )
    return segments


def recalibrations(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """``(t_s, trigger, mode, outcome, version)`` of each recalibration in an event log
    (a daemon's ``events.jsonl`` or a replay report's ``events``)."""
    out = []
    for e in events:
        if e.get("kind") == "recalibration":
            f = e["fields"]
            out.append((f["t_s"], f["trigger"], f["mode"], f["outcome"], f.get("version")))
    return out
