"""The daemon fed over HTTP against ``regulator replay``, gas batches 2→5 (issue 11: "the
same per-batch figures as replay, the same loop").

Run: ``nice python bench/replay_http.py`` (writes bench/results/replay_http.json and
.md; needs models/gas-drift and data/gas-drift). Both runs use the shipped policy
deploy/policies/gas-drift-replay.yaml: ``regulator replay`` on the four files, then
``regulator run`` with ``source: {kind: http, clock: sample}``, fed the same files one
sample per ``POST /v1/samples`` with replay's labels over ``POST /v1/feedback``
(:mod:`tests.service.replay_http`). Both in one torch thread; replay is run again
with torch's default threads, to see whether that changes anything.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from regulator.client import Client  # noqa: E402
from regulator.policy.model import load_policy  # noqa: E402
from tests.service.conftest import TOKEN, DaemonProcess, write_policy  # noqa: E402
from tests.service.replay_http import (  # noqa: E402
    CLIENT_TIMEOUT_S,
    SAME_THREADS,
    daemon_policy,
    feed_daemon,
    recalibrations,
    run_replay_cli,
)

POLICY = REPO / "deploy" / "policies" / "gas-drift-replay.yaml"
FILES = [REPO / "data" / "gas-drift" / f"batch{i}.dat" for i in (2, 3, 4, 5)]
OUT = REPO / "bench" / "results"
HEAD = (
    "| batch | samples | labels revealed | replay accuracy % | HTTP accuracy % "
    "| replay version at end | HTTP version at end |\n|---|---:|---:|---:|---:|---|---|"
)


def main() -> int:
    if not (REPO / "models" / "gas-drift" / "model.json").exists():
        print("models/gas-drift is missing: train it first", file=sys.stderr)
        return 1
    cfg = yaml.safe_load(POLICY.read_text())
    cfg["model"]["prior"] = str(REPO / "models" / "gas-drift")
    with tempfile.TemporaryDirectory(prefix="replay-http-") as tmp_s:
        tmp = Path(tmp_s)
        config = write_policy(tmp / "replay.yaml", cfg)
        t0 = time.perf_counter()
        report = run_replay_cli(config, FILES, tmp / "replay.json", cwd=tmp)
        replay_s = time.perf_counter() - t0
        threads = run_replay_cli(config, FILES, tmp / "threads.json", cwd=tmp, one_thread=False)
        d = DaemonProcess(
            write_policy(tmp / "daemon.yaml", daemon_policy(cfg)),
            tmp / "state",
            tmp / "daemon.log",
            extra_env=SAME_THREADS,
        )
        try:
            d.start().wait_ready()
            t0 = time.perf_counter()
            with Client(d.url, token=TOKEN, timeout=CLIENT_TIMEOUT_S) as client:
                served = feed_daemon(client, load_policy(config), FILES)
            http_s = time.perf_counter() - t0
            daemon_recals = recalibrations(d.events())
        finally:
            d.close()
    replay_recals = recalibrations(report["events"])
    rows = []
    for a, b in zip(report["segments"], served, strict=True):
        rows.append(
            {
                "batch": Path(a["file"]).stem,
                "samples": a["samples"],
                "labels_revealed": a["labels_revealed"],
                "replay_accuracy": a["accuracy"],
                "http_accuracy": b["accuracy"],
                "replay_version_at_end": a["model_version_at_end"],
                "http_version_at_end": b["version_at_end"],
            }
        )
    same = all(
        r["replay_accuracy"] == r["http_accuracy"]
        and r["replay_version_at_end"] == r["http_version_at_end"]
        for r in rows
    )
    result: dict[str, Any] = {
        "command": "nice python bench/replay_http.py",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "load_average": os.getloadavg(),
        "policy": str(POLICY.relative_to(REPO)),
        "replay_wall_s": replay_s,
        "http_wall_s": http_s,
        "segments": rows,
        "recalibrations": {"replay": replay_recals, "http": daemon_recals},
        "identical": same and replay_recals == daemon_recals,
        # regulator replay as users run it (torch's default threads): the same figures?
        "replay_default_threads_accuracy": [s["accuracy"] for s in threads["segments"]],
        "replay_default_threads_same": [s["accuracy"] for s in threads["segments"]]
        == [r["replay_accuracy"] for r in rows]
        and recalibrations(threads["events"]) == replay_recals,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "replay_http.json").write_text(json.dumps(result, indent=1) + "\n")
    table = "\n".join(
        f"| {r['batch']} | {r['samples']} | {r['labels_revealed']} | "
        f"{100 * r['replay_accuracy']:.2f} | {100 * r['http_accuracy']:.2f} | "
        f"{r['replay_version_at_end']} | {r['http_version_at_end']} |"
        for r in rows
    )
    recal_rows = "\n".join(
        f"| {a[0]:.2f} | {a[1]} | {a[3]} | {a[4] or '—'} | "
        + (f"{b[0]:.2f} | {b[3]} | {b[4] or '—'} |" if b else "— | — | — |")
        for a, b in zip(
            replay_recals,
            [*daemon_recals, *[None] * (len(replay_recals) - len(daemon_recals))],
            strict=False,
        )
    )
    md = f"""# The daemon over HTTP against `regulator replay`, gas batches 2→5

Command: `{result["command"]}` · {result["machine"]["platform"]}, {result["machine"]["cpus"]}
CPUs, load average {result["load_average"][0]:.1f} at the end · policy `{result["policy"]}`
for both. Replay: `regulator replay` on the four files. HTTP: `regulator run` with
`source: {{kind: http, clock: sample}}`, fed the same files one sample per
`POST /v1/samples` at replay's simulated times (`t = i / 20 Hz`), with replay's labels
(5 per gas revealed at each batch start, with their inputs) over `POST /v1/feedback`;
candidates built in the daemon's worker process. Both in one torch thread.
Accuracy excludes the revealed samples, as replay's does.

{HEAD}
{table}

Recalibrations (simulated start time in s, trigger, outcome, version):

| replay t | trigger | outcome | version | HTTP t | outcome | version |
|---:|---|---|---|---:|---|---|
{recal_rows}

Identical per-batch figures and recalibrations: **{"yes" if result["identical"] else "no"}**.
`regulator replay` with torch's default threads ({os.cpu_count()} here) instead of one: the
same figures and recalibrations, **{"yes" if result["replay_default_threads_same"] else "no"}**.
Wall time: replay {replay_s:.0f} s, daemon over HTTP {http_s:.0f} s (one request per
sample, each answered once served).
"""
    (OUT / "replay_http.md").write_text(md)
    print(md)
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
