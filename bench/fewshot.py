"""Few-shot accuracy and energy of the shipped priors against the skeptic's peers, 3 runs.

    python bench/fewshot.py [--runs 3] [--tasks 40] [--draws 20]

Each run draws new held-out tasks (nanosensor: environments with seeds >= 2**31, never
seen in training; gas drift: new draws of 5 shots per gas from batches 2-5) and scores
the prior and every peer on the same shots and query samples. Reported: the median and
range over runs of each row's mean accuracy, the prior's gap to the best peer, and the
energy per inference of the chip next to what each dense peer's multiply-accumulates
and weight reads cost (Horowitz 2014 figures, :mod:`regulator.chip.energy`).
Writes ``bench/results/fewshot.json`` and ``fewshot.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from regulator.chip.energy import E_DENSE_MAC_J  # noqa: E402
from regulator.meta.card import row_label  # noqa: E402
from regulator.meta.evaluate import evaluate  # noqa: E402
from regulator.meta.gas_protocol import evaluate_gas_drift  # noqa: E402
from regulator.meta.model import ModelBundle  # noqa: E402
from regulator.meta.peers import MLP_HIDDEN, PEER_NAMES  # noqa: E402
from regulator.meta.recipes import best_peer  # noqa: E402

RESULTS = REPO / "bench" / "results"


def dense_macs(peer: str, n_features: int, n_classes: int) -> int:
    """Multiply-accumulates per inference of a peer on ``n_features`` inputs."""
    if peer.startswith("mlp"):
        return n_features * MLP_HIDDEN + MLP_HIDDEN * n_classes
    return n_features * n_classes  # logistic regression, or distances to class means


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run_nanosensor(runs: int, tasks: int) -> dict[str, Any]:
    bundle = ModelBundle.load(REPO / "models" / "nanosensor")
    per_run = []
    for r in range(runs):
        t0 = time.perf_counter()
        res = evaluate(bundle, ks=(1, 5, 10), n_tasks=tasks, seed=100 + r, train_envs=False)
        res["seconds"] = time.perf_counter() - t0
        per_run.append(res)
        print(f"nanosensor run {r + 1}/{runs}: {res['seconds']:.0f} s", flush=True)
    table: dict[str, Any] = {}
    for k in ("1", "5", "10"):
        rows = per_run[0]["table"][k]
        table[k] = {
            name: summary([run["table"][k][name]["metric"]["mean"] for run in per_run])
            for name in rows
        }
        gaps = []
        for run in per_run:
            _, peer = best_peer(run["table"][k])
            gaps.append(run["table"][k]["meta"]["metric"]["mean"] - peer)
        table[k]["gap_to_best_peer"] = summary(gaps)
        table[k]["best_peer"] = [best_peer(run["table"][k])[0] for run in per_run]
    fam = bundle.task
    n_feat = int(fam["n_channels"]) * int(fam["length"])
    return {
        "runs": per_run,
        "table": table,
        "energy_per_inference_j": bundle.calibration["energy_per_inference_j"],
        "peer_energy_j": {
            p: dense_macs(p, n_feat, int(fam["n_outputs"])) * E_DENSE_MAC_J for p in PEER_NAMES
        },
    }


def run_gas(runs: int, draws: int) -> dict[str, Any]:
    if not (REPO / "models" / "gas-drift").is_dir() or os.environ.get("FEWSHOT_SKIP_GAS"):
        return {}
    bundle = ModelBundle.load(REPO / "models" / "gas-drift")
    per_run = []
    for r in range(runs):
        res = evaluate_gas_drift(bundle, REPO / "data" / "gas-drift", draws=draws, seed=100 + r)
        per_run.append(res)
        print(f"gas-drift run {r + 1}/{runs}: {res['seconds']:.0f} s", flush=True)
    names = list(per_run[0]["mean_over_batches"])
    table = {
        n: {
            "mean": summary([run["mean_over_batches"][n] for run in per_run]),
            **{
                b: summary([run["table"][b][n]["metric"]["mean"] for run in per_run])
                for b in per_run[0]["table"]
            },
        }
        for n in names
    }
    return {
        "runs": per_run,
        "table": table,
        "energy_per_inference_j": bundle.calibration["energy_per_inference_j"],
        "peer_energy_j": {p: dense_macs(p, 128, 6) * E_DENSE_MAC_J for p in PEER_NAMES},
    }


def _rng(s: dict[str, float], scale: float = 100.0) -> str:
    return f"{scale * s['median']:.1f} [{scale * s['min']:.1f}, {scale * s['max']:.1f}]"


def markdown(res: dict[str, Any], command: str) -> str:
    nano, gas = res["nanosensor"], res["gas_drift"]
    if not gas:
        gas = {"table": {}, "energy_per_inference_j": float("nan")}
    lines = [
        "# Few-shot adaptation against the skeptic's peers",
        "",
        f"Command: `{command}`  ",
        f"Machine: {res['machine']}; {res['runs']} runs (new task draws each run), "
        "median [min, max] over runs of each row's mean accuracy %.",
        "",
        "## nanosensor, held-out environments, loihi profile",
        "",
        f"{res['tasks']} tasks per K per run, 60 query samples each.",
        "",
        "| method | 1-shot | 5-shot | 10-shot | energy / inference nJ |",
        "|---|---|---|---|---|",
    ]
    t = nano["table"]
    e_chip = nano["energy_per_inference_j"] * 1e9
    for name in t["5"]:
        if name in ("gap_to_best_peer", "best_peer"):
            continue
        energy = (
            f"{e_chip:.1f} (chip)"
            if name in ("meta", "no_adaptation", "joint_finetune", "scratch")
            else f"{nano['peer_energy_j'].get(name, float('nan')) * 1e9:.1f} (dense)"
        )
        lines.append(
            f"| {row_label(name)} | "
            + " | ".join(_rng(t[k][name]) for k in ("1", "5", "10"))
            + f" | {energy} |"
        )
    lines.append(
        "| **prior minus best peer, points** | "
        + " | ".join(_rng(t[k]["gap_to_best_peer"]) for k in ("1", "5", "10"))
        + " | |"
    )
    lines += [
        "",
        "## gas drift, trained on batch 1 only, 5 labelled samples per gas",
        "",
        f"{res['draws']} draws per batch per run.",
        "",
        "| method | batch 2 | batch 3 | batch 4 | batch 5 | mean 2-5 |",
        "|---|---|---|---|---|---|",
    ]
    g = gas["table"]
    for name, row in g.items():
        cells = [_rng(row[b]) for b in ("2", "3", "4", "5")]
        lines.append(f"| {row_label(name)} | " + " | ".join(cells) + f" | {_rng(row['mean'])} |")
    lines += [
        "",
        f"Chip energy per inference: nanosensor {e_chip:.1f} nJ, gas drift "
        f"{gas['energy_per_inference_j'] * 1e9:.1f} nJ (loihi figures). Dense peers: "
        "MACs x (4.6 pJ MAC + 5.0 pJ weight read), Horowitz ISSCC 2014 (docs/energy.md).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=40)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument(
        "--resume-nanosensor",
        type=Path,
        help="take the nanosensor half from an earlier fewshot.json (same --runs/--tasks)",
    )
    ap.add_argument(
        "--resume-gas",
        type=Path,
        help="take the gas-drift half from an earlier run's JSON (same --runs/--draws)",
    )
    ap.add_argument(
        "--gas-only",
        type=Path,
        metavar="OUT",
        help="run the gas-drift half alone and write it to OUT (merge with --resume-gas)",
    )
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.gas_only:
        part = {"runs": a.runs, "draws": a.draws, "gas_drift": run_gas(a.runs, a.draws)}
        a.gas_only.write_text(json.dumps(part, indent=1, default=float))
        return 0
    t0 = time.perf_counter()
    res: dict[str, Any] = {
        "runs": a.runs,
        "tasks": a.tasks,
        "draws": a.draws,
        "machine": f"{platform.machine()}, torch {torch.__version__} (1 thread)",
        "nanosensor": json.loads(a.resume_nanosensor.read_text())["nanosensor"]
        if a.resume_nanosensor
        else run_nanosensor(a.runs, a.tasks),
        "gas_drift": json.loads(a.resume_gas.read_text())["gas_drift"]
        if a.resume_gas
        else run_gas(a.runs, a.draws),
    }
    res["seconds"] = time.perf_counter() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fewshot.json").write_text(json.dumps(res, indent=1, default=float))
    cmd = f"python bench/fewshot.py --runs {a.runs} --tasks {a.tasks} --draws {a.draws}"
    (RESULTS / "fewshot.md").write_text(markdown(res, cmd))
    print((RESULTS / "fewshot.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
