"""Gas-drift batches 2–5 replayed through the daemon's runtime, with and without recalibration.

Run: ``python bench/replay_gas.py`` (writes bench/results/replay_gas.json and .md; needs
models/gas-drift and data/gas-drift). Policy: deploy/policies/gas-drift-replay.yaml
(drift → supervised recalibration; 5 labelled samples per class revealed at each batch
start). The baseline is the same replay with ``rules: []``: the same labels are revealed,
nothing acts on them. Per-batch accuracy excludes the revealed samples.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

import torch  # noqa: E402

from regulator.policy.model import load_policy  # noqa: E402
from regulator.service.replay import run_replay  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "gas-drift"
POLICY = REPO / "deploy" / "policies" / "gas-drift-replay.yaml"
OUT = Path(__file__).parent / "results"


def main() -> int:
    torch.set_num_threads(1)
    if not (REPO / "models" / "gas-drift" / "model.json").exists():
        print("models/gas-drift is missing: train it first", file=sys.stderr)
        return 1
    files = [str(DATA / f"batch{i}.dat") for i in (2, 3, 4, 5)]
    policy = load_policy(POLICY)
    runs: dict[str, Any] = {}
    for name, pol in (("recalibrate", policy), ("no_rules", policy.with_overrides({"rules": []}))):
        t0 = time.perf_counter()
        rep = run_replay(pol, files, OUT / f"replay_gas.{name}.report.json")
        runs[name] = {
            "wall_s": time.perf_counter() - t0,
            "segments": [
                {
                    "batch": Path(s["file"]).stem,
                    "samples": s["samples"],
                    "accuracy": s.get("accuracy"),
                    "detections": len(s["detections"]),
                    "first_detection_delay": (
                        s["detections"][0]["delay_samples"] if s["detections"] else None
                    ),
                    "recalibrations": [
                        {
                            k: r.get(k)
                            for k in ("outcome", "mode", "reason", "version", "evaluation")
                        }
                        for r in s["recalibrations"]
                    ],
                    "version_at_end": s["model_version_at_end"],
                    "inference_energy_j": s["inference_energy_j"],
                }
                for s in rep["segments"]
            ],
            "energy_j": rep["energy_j"],
        }
    report = {
        "command": "python bench/replay_gas.py",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
        },
        "policy": str(POLICY.relative_to(REPO)),
        "runs": runs,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "replay_gas.json").write_text(json.dumps(report, indent=1) + "\n")
    rows = []
    for a, b in zip(runs["recalibrate"]["segments"], runs["no_rules"]["segments"], strict=True):
        outcomes = (
            ", ".join(
                r["outcome"] + ("/" + r["mode"] if r["mode"] else "") for r in a["recalibrations"]
            )
            or "—"
        )
        rows.append(
            f"| {a['batch']} | {a['samples']} | {a['accuracy']:.3f} | {b['accuracy']:.3f} | "
            f"{a['detections']} | {outcomes} | {a['version_at_end']} |"
        )
    head = "| batch | samples | accuracy, recalibrating | accuracy, no rules | detections "
    head += "| recalibrations | version at end |\n|---|---:|---:|---:|---:|---|---|"
    rc, nr = runs["recalibrate"], runs["no_rules"]
    md = f"""# Gas-drift replay, batches 2–5: recalibration on drift vs none

Command: `python bench/replay_gas.py` · {report["machine"]["platform"]},
{report["machine"]["cpus"]} CPUs · policy `{report["policy"]}` (5 labelled samples per
class revealed at each batch start; accuracy excludes them). Baseline: the same replay
with `rules: []`.

{head}
{chr(10).join(rows)}

Learning energy: {rc["energy_j"]["learning"]:.3g} J; inference energy
{rc["energy_j"]["inference"]:.3g} J (recalibrating) vs {nr["energy_j"]["inference"]:.3g} J
(no rules). Wall time {rc["wall_s"]:.0f} s and {nr["wall_s"]:.0f} s.
Full reports: `bench/results/replay_gas.*.report.json`.
"""
    (OUT / "replay_gas.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
