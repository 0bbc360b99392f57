"""Gas drift beyond the recordings: batches 2–5 with simulated further sensor ageing.

Run: ``python bench/gas_ageing.py [--sigmas 0.3 0.6] [--seeds 0 1 2] [--draws 5]``
(writes bench/results/gas_ageing.json and .md; needs models/gas-drift and
data/gas-drift). A probe of drift the shipped prior and policy never saw, which no
setting was chosen on: the product is also scored on later recordings of the same
sensor array, which are not in the repository.

The ageing model: each of the 16 sensors gets a gain ``g_s = exp(N(0, sigma))`` (one
draw per seed), and batch ``b`` of the real recordings is scaled by ``g_s ** ((b - 1)
/ 4)`` on that sensor's features (the resistance change and its six exponential
moving averages; the normalised resistance change, a ratio, is left as it is). So the
drift of the recordings is kept and a monotone gain drift of each sensor, growing with
the batch, is laid over it; batch 1 (the prior's training batch) is unchanged.

Per seed and sigma, in the same run: the offline protocol (``regulator evaluate
--gas-drift``: ``--draws`` draws of 5 labelled samples per gas, the prior against the
skeptic's peers) and ``regulator replay`` of the aged batches 2→5 with the shipped
policy (deploy/policies/gas-drift-replay.yaml: 5 labels per gas revealed at each batch
start). Reported: the median [range] over the seeds of each batch's accuracy.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from regulator.meta.gas_protocol import evaluate_gas_drift  # noqa: E402
from regulator.meta.model import ModelBundle  # noqa: E402
from regulator.policy.model import load_policy  # noqa: E402
from regulator.service.replay import run_replay  # noqa: E402
from regulator.tasks.formats import load_gas_drift  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "gas-drift"
PRIOR = REPO / "models" / "gas-drift"
POLICY = REPO / "deploy" / "policies" / "gas-drift-replay.yaml"
OUT = Path(__file__).parent / "results"
BATCHES = (2, 3, 4, 5)
N_SENSORS, PER_SENSOR = 16, 8
RATIO_FEATURE = 1  # a sensor's normalised resistance change: a ratio, not scaled
ROWS = {  # display name: the protocol's row
    "prior: label-free + few-shot (offline)": "labelfree_fewshot",
    "logistic regression, source data + shots": "lr_source",
    "logistic regression, shots only": "lr_scratch",
    "dense MLP, per-environment normalised, re-normalised + fine-tuned": "mlp_renorm",
    "dense MLP, source data + shots": "mlp_source",
    "nearest class mean, standardised on the shots": "ncm",
    "no adaptation": "no_adaptation",
}


def write_batch(path: Path, x: np.ndarray, y: np.ndarray, conc: np.ndarray) -> None:
    """One batch in the gas-drift format (``GAS;CONC 1:F1 … 128:F128``)."""
    with path.open("w", encoding="ascii") as f:
        for xi, yi, ci in zip(x, y, conc, strict=True):
            feats = " ".join(f"{j + 1}:{v:.6f}" for j, v in enumerate(xi))
            f.write(f"{int(yi) + 1};{float(ci):.6f} {feats}\n")


def aged_copy(out: Path, sigma: float, seed: int) -> np.ndarray:
    """Batches 1–5 in ``out``, 2–5 aged (see the module docstring); the gains."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / "batch1.dat", out / "batch1.dat")
    gains = np.exp(np.random.default_rng([seed, 0xA9E]).normal(0.0, sigma, size=N_SENSORS))
    for b in BATCHES:
        x, y, conc = load_gas_drift(DATA / f"batch{b}.dat")
        scale = np.repeat(gains[:, None] ** ((b - 1) / 4), PER_SENSOR, axis=1)
        scale[:, RATIO_FEATURE] = 1.0
        aged = x[:, :, 0].astype(np.float64) * scale.reshape(-1)
        write_batch(out / f"batch{b}.dat", aged, y, conc)
    return gains


def one(sigma: float, seed: int, draws: int, tmp: Path) -> dict[str, Any]:
    folder = tmp / f"s{sigma}-{seed}"
    gains = aged_copy(folder, sigma, seed)
    t0 = time.perf_counter()
    offline = evaluate_gas_drift(
        ModelBundle.load(PRIOR), folder, draws=draws, batches=BATCHES, seed=seed
    )
    files = [str(folder / f"batch{b}.dat") for b in BATCHES]
    report = run_replay(load_policy(POLICY), files, None)
    acc = {
        name: [100 * offline["table"][str(b)][key]["metric"]["mean"] for b in BATCHES]
        for name, key in ROWS.items()
    }
    acc["closed loop (replay, one draw)"] = [100 * s["accuracy"] for s in report["segments"]]
    return {
        "sigma": sigma,
        "seed": seed,
        "gains": gains.round(3).tolist(),
        "accuracy_pct": acc,
        "seconds": time.perf_counter() - t0,
    }


def cell(vals: list[float]) -> str:
    return f"{np.median(vals):.1f} [{min(vals):.1f}, {max(vals):.1f}]"


def write(a: argparse.Namespace, runs: list[dict[str, Any]], wall_s: float) -> None:
    OUT.mkdir(exist_ok=True)
    (OUT / "gas_ageing.json").write_text(json.dumps({"runs": runs}, indent=1))
    lines = [
        "# Gas drift beyond the recordings: simulated further sensor ageing",
        "",
        f"Command: `python bench/gas_ageing.py --sigmas {' '.join(map(str, a.sigmas))} "
        f"--seeds {' '.join(map(str, a.seeds))} --draws {a.draws}` · {platform.platform()}, "
        f"torch {torch.__version__} · wall {wall_s:.0f} s.",
        "",
        "Batches 2–5 of the recordings, each sensor's features scaled by a gain",
        "`exp(N(0, sigma)) ** ((b - 1) / 4)` (see the script's docstring); nothing was chosen",
        "on these figures. Offline rows: the protocol of `regulator evaluate --gas-drift`",
        f"(mean of {a.draws} draws of 5 labels per gas). Closed loop: `regulator replay` with",
        "the shipped policy, 5 labels per gas revealed at each batch start (one draw: 5",
        "random samples of each gas, seeded by the batch's place). Cells: median [range]",
        "over the seeds, % accuracy on the batch's unlabelled samples.",
        "",
    ]
    for sigma in a.sigmas:
        mine = [r for r in runs if r["sigma"] == sigma]
        names = list(mine[0]["accuracy_pct"])
        lines += [
            f"## sigma {sigma} (gains of seed {mine[0]['seed']}: "
            f"{min(mine[0]['gains']):.2f}–{max(mine[0]['gains']):.2f})",
            "",
            "| method | " + " | ".join(f"batch {b}" for b in BATCHES) + " | mean |",
            "|---|" + "---|" * (len(BATCHES) + 1),
        ]
        for name in names:
            per_b = [[r["accuracy_pct"][name][i] for r in mine] for i in range(len(BATCHES))]
            means = [float(np.mean(r["accuracy_pct"][name])) for r in mine]
            row = " | ".join(cell(v) for v in per_b)
            lines.append(f"| {name} | {row} | {cell(means)} |")
        loop = "closed loop (replay, one draw)"
        off = "prior: label-free + few-shot (offline)"
        diff = [
            [r["accuracy_pct"][loop][i] - r["accuracy_pct"][off][i] for r in mine]
            for i in range(len(BATCHES))
        ]
        row = " | ".join(cell(v) for v in diff)
        lines.append(f"| closed loop − offline prior | {row} | |")
        lines.append("")
    (OUT / "gas_ageing.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.3, 0.6])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--draws", type=int, default=5)
    a = ap.parse_args()
    if not (PRIOR / "model.json").exists():
        print("models/gas-drift is missing: train it first", file=sys.stderr)
        return 1
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gas-ageing-") as tmp:
        runs = [one(s, seed, a.draws, Path(tmp)) for s in a.sigmas for seed in a.seeds]
    write(a, runs, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
