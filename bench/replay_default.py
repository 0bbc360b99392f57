"""The embedded default policy through ``regulator replay``: does served accuracy come
back after each shift, and on how many labels?

Run: ``python bench/replay_default.py`` (writes bench/results/replay_default.json and
.md). The data are the embedded default's own environment: the nanosensor family, a
segment of ``--samples`` per environment (the default shifts every 180 s at 20 Hz, 3,600
samples), the nominal environment first, then held-out environments (seeds >= 2**31,
never drawn in meta-training). The policy is the embedded default with its simulated
source replaced by a replay of these segments, with the same label feedback (30 % of
samples, 10 samples late). The offline figure of each environment is the prior adapted
with 5 shots per class drawn from that environment (the prior's inner loop, as in
``regulator evaluate``), scored on the segment's samples.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from regulator.chip.network import ChipInstance  # noqa: E402
from regulator.meta.adapt import adapt  # noqa: E402
from regulator.meta.model import ChipModel, ModelBundle  # noqa: E402
from regulator.policy.model import load_policy  # noqa: E402
from regulator.service.replay import run_replay  # noqa: E402
from regulator.tasks.base import make_family  # noqa: E402
from regulator.tasks.formats import save_npz  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results"
HELD_OUT = 2**31
HEADER = (
    "| environment | samples | served % (segment) | served % after the swap (samples) "
    "| offline 5-shot % | after swap − offline | labels before the swap "
    "| detection delays | recalibrations |\n|---|---:|---:|---:|---:|---:|---:|---|---|"
)


def offline(prior: ModelBundle, env: Any, x: np.ndarray, y: np.ndarray, seed: int) -> float:
    """The prior adapted on 5 shots per class of ``env``, accuracy on ``x``."""
    fam = make_family("nanosensor")
    n_cls = prior.cfg.n_outputs
    sx, sy = fam.sample(env, 5 * n_cls, np.random.default_rng(seed),
                        classes=np.repeat(np.arange(n_cls), 5))  # fmt: skip
    chip = ChipInstance.create(prior.profile, prior.cfg, 0)
    model, _ = adapt(prior, sx, sy, chip)
    with torch.no_grad():
        pred = ChipModel(model, seed=0).predict(x)
    return float((np.asarray(pred.labels) == y).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=3600, help="samples per environment")
    ap.add_argument("--shifts", type=int, default=3)
    ap.add_argument(
        "--data-seed", type=int, default=0, help="seeds the samples drawn (the record: 0)"
    )
    a = ap.parse_args()
    torch.set_num_threads(1)
    base = load_policy(None)
    fam = make_family("nanosensor")
    prior = ModelBundle.load(REPO / base.model.prior)
    tmp = Path(tempfile.mkdtemp(prefix="bench-default-"))
    rng = np.random.default_rng(a.data_seed)
    envs = [fam.nominal_environment()] + [
        fam.environment_from_seed(HELD_OUT + k) for k in range(a.shifts)
    ]
    files, offline_acc = [], []
    for k, env in enumerate(envs):
        x, y = fam.sample(env, a.samples, rng)
        path = tmp / f"env{k}.npz"
        save_npz(path, x, y)
        files.append(str(path))
        offline_acc.append(offline(prior, env, x, y, seed=100 + k))
    policy = base.with_overrides(
        {
            "source": {
                "kind": "replay",
                "files": files,
                "rate_hz": 20.0,
                "label_fraction": 0.3,
                "label_delay_samples": 10,
            }
        }
    )
    t0 = time.perf_counter()
    rep = run_replay(policy, files, tmp / "report.json")
    wall = time.perf_counter() - t0
    rows = []
    for k, (seg, off) in enumerate(zip(rep["segments"], offline_acc, strict=True)):
        after = seg["after_swap"]
        rows.append({
            "environment": "nominal" if k == 0 else f"held-out seed 2**31+{k - 1}",
            "samples": seg["samples"],
            "accuracy_whole_segment": seg["accuracy"],
            "accuracy_after_swap": after["score"],
            "samples_after_swap": after["samples"],
            "labels_before_swap": after["labels_before"],
            "offline_5_shot": off,
            "recalibrations": [f"{r['outcome']}/{r['trigger']}" for r in seg["recalibrations"]],
            "detections": [d["delay_samples"] for d in seg["detections"]],
        })  # fmt: skip
    report = {
        "command": "python " + " ".join(sys.argv),
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
        "wall_s": wall,
        "segments": rows,
    }
    OUT.mkdir(exist_ok=True)
    name = "replay_default" if a.data_seed == 0 else f"replay_default.seed{a.data_seed}"
    (OUT / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}"

    def gap(r: dict[str, Any]) -> str:
        if r["accuracy_after_swap"] is None:
            return "no swap"
        return f"{100 * (r['accuracy_after_swap'] - r['offline_5_shot']):+.1f}"

    table = "\n".join(
        f"| {r['environment']} | {r['samples']} | {pct(r['accuracy_whole_segment'])} | "
        f"{pct(r['accuracy_after_swap'])} ({r['samples_after_swap']}) | "
        f"{pct(r['offline_5_shot'])} | {gap(r)} | {r['labels_before_swap'] or '–'} | "
        f"{r['detections']} | {', '.join(r['recalibrations']) or '–'} |"
        for r in rows
    )
    md = f"""# The embedded default through replay: accuracy after each shift

Command: `{report["command"]}` · {report["machine"]["platform"]}, torch
{report["machine"]["torch"]} · wall {wall:.0f} s. Policy: the embedded default
(`regulator run` with no config), its simulated source replaced by a replay of the same
family's environments (30 % of samples labelled, 10 samples late). Offline: the prior's
inner loop with 5 shots per class of the same environment, scored on the same samples.

{HEADER}
{table}
"""
    (OUT / f"{name}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
