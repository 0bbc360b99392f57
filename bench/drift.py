"""Drift-detection benchmark: our calibrated CUSUMs vs River's ADWIN, PageHinkley, KSWIN
and an oracle CUSUM that knows the post-change distribution, on the same streams.

Run by hand (about 3 minutes on one core)::

    python bench/drift.py            # writes bench/results/drift.{json,md}
    python bench/drift.py --quick    # a smoke run

Scored as the daemon scores: samples go through the shipped model on the simulated chip
(``ChipModel(ModelBundle.load("models/..."), seed=0).predict``); the OOD score is the
Mahalanobis distance of the *hidden spike counts*, turned into conformal p-values.

Streams (each replicate: in-distribution samples, then the change):

- ``nanosensor`` (models/nanosensor with its own shipped calibration, as
  the daemon uses it): nominal environment, then ``interpolate(nominal, far, w)`` for
  w = 0.1, 0.2, 0.3, 0.5 (abrupt) and a gradual ramp to w = 0.3;
- gas-drift (models/gas-drift, data/gas-drift): fit and calibrate on a random
  split of batch 1 (150 + 150), stream the held-out rest of batch 1, then batch k;
- synthetic Gaussian features (d=16, no chip), kept from the first run for reference.

Every detector sees the same stream: ours the conformal p-values; River's the same score
standardised by in-distribution mean and std; the score oracle a CUSUM on the true log
density ratio of the p-values; the feature oracle the Gaussian log-likelihood ratio of
the hidden counts (synthetic: of the features), pre- vs post-change.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from river import drift as rdrift
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from regulator.monitor import CalibratedScorer, MahalanobisScorer, make_detector  # noqa: E402
from regulator.monitor.threshold import calibrate_threshold  # noqa: E402

ARL0 = 2000.0  # configured mean samples between false alarms: 5 per 10,000
N_PRE = 2000
N_POST = 1000
RAMP = 500
GAS_DIR = Path(os.environ.get("GAS_DRIFT_DIR", str(ROOT / "data" / "gas-drift")))
MODELS = ROOT / "models"


# -- detectors ---------------------------------------------------------------------------


def cusum_alarms(x: np.ndarray, h: float) -> list[int]:
    """Alarm indices of a CUSUM on increments x, restarting at 0 after each alarm."""
    out: list[int] = []
    start, s0 = 0, 0.0
    while start < x.size:
        c = s0 + np.cumsum(x[start:])
        s = c - np.minimum(np.minimum.accumulate(c), 0.0)
        hit = np.flatnonzero(s >= h)
        if hit.size == 0:
            break
        out.append(start + int(hit[0]))
        start += int(hit[0]) + 1
    return out


def empirical_threshold(h0: np.ndarray, arl0: float, n_states: int = 300) -> float:
    """CUSUM threshold for ARL0, Brook-Evans chain on the empirical law of increments."""
    srt = np.sort(h0)

    def cdf(v: np.ndarray) -> np.ndarray:
        return np.searchsorted(srt, v, side="right") / srt.size

    def arl(h: float) -> float:
        w = 2.0 * h / (2 * n_states - 1)
        i = np.arange(n_states, dtype=float)
        diff = (i[None, :] - i[:, None]) * w
        q = cdf(diff + w / 2) - cdf(diff - w / 2)
        q[:, 0] = cdf(w / 2 - i * w)
        try:
            return float(np.linalg.solve(np.eye(n_states) - q, np.ones(n_states))[0])
        except np.linalg.LinAlgError:  # no way up from 0: the run length is unbounded
            return float("inf")

    lo, hi = 0.0, 1.0
    while arl(hi) < arl0:
        lo, hi = hi, hi * 2
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if arl(mid) < arl0 else (lo, mid)
    return hi


def score_oracle(
    p_post: np.ndarray, n_cal: int
) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """CUSUM on the true log density ratio of the p-values (post-change law estimated
    from plentiful post-change samples by a histogram of -log p; in-control law: the
    uniform grid 1/(n_cal+1)...1, exactly): the fastest any detector on this score can be."""
    edges = np.linspace(0.0, np.log(n_cal + 1) + 1e-9, 25)
    grid = np.arange(1, n_cal + 2) / (n_cal + 1)

    def hist(p: np.ndarray) -> np.ndarray:
        h = np.histogram(-np.log(p), bins=edges)[0] + 0.5
        return h / h.sum()

    llr = np.log(hist(p_post) / hist(grid))

    def inc(p: np.ndarray) -> np.ndarray:
        return llr[np.clip(np.searchsorted(edges, -np.log(p), side="right") - 1, 0, llr.size - 1)]

    return inc, empirical_threshold(inc(grid), ARL0)


def river_alarms(make: Callable[[], Any], z: np.ndarray) -> list[int]:
    det = make()
    out = []
    for i, v in enumerate(z.tolist()):
        det.update(v)
        if det.drift_detected:
            out.append(i)
    return out


def ours_alarms(name: str, cfg: dict[str, Any], p: np.ndarray, n_cal: int) -> list[int]:
    det = make_detector(
        name, mean_samples_between_false_alarms=ARL0, **{"n_calibration": n_cal, **cfg}
    )
    out: list[int] = []
    for k in range(0, p.size, 64):  # batches, as the daemon feeds them (up to 64)
        det.update(p[k : k + 64])
        out.extend(det.alarm_indices)
    return out


OURS: dict[str, tuple[str, dict[str, Any]]] = {
    # the daemon's default: cusum (a=0.5), threshold on the exact conformal-grid law
    "ours_cusum": ("cusum", {}),
    "ours_cusum_continuous_h": ("cusum", {"n_calibration": None}),  # the first run's way
    "ours_probit_cusum": ("probit_cusum", {"delta": 0.5}),
    "ours_mixture_cusum": ("mixture_cusum", {}),
}
DEFAULT = "ours_cusum"
RIVER = ("adwin", "page_hinkley", "kswin")


# -- streams -----------------------------------------------------------------------------


def gaussian_llr_oracle(pre: np.ndarray, post: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """LLR of N(mu1, S) vs N(mu0, S), S a pooled shrinkage covariance."""
    mu0, mu1 = pre.mean(0), post.mean(0)
    sc = MahalanobisScorer().fit(np.vstack([pre - mu0, post - mu1]))
    assert sc._precision is not None
    w = sc._precision @ (mu1 - mu0)
    c = 0.5 * (mu1 @ sc._precision @ mu1 - mu0 @ sc._precision @ mu0)
    return lambda x: x @ w - c


def synthetic_condition(m: float, gradual: bool, rng: np.random.Generator, d: int = 16) -> dict:
    direction = rng.normal(size=d)
    mu1 = m * direction / np.linalg.norm(direction)

    def draw(n: int, w: np.ndarray | float = 1.0) -> np.ndarray:
        return rng.normal(size=(n, d)) + np.asarray(w).reshape(-1, 1) * mu1

    w_post = np.clip((np.arange(N_POST) + 1) / RAMP, 0, 1) if gradual else 1.0
    h_or = calibrate_threshold(("normal", float(m)), ARL0)

    def replicate() -> tuple[np.ndarray, np.ndarray, int]:
        x = np.vstack([draw(N_PRE, 0.0), draw(N_POST, w_post)])
        return x, x @ mu1 / m * m - 0.5 * m * m, N_PRE  # exact LLR of the final shift

    fit, cal = draw(3000, 0.0), draw(300, 0.0)
    return {
        "model": lambda: CalibratedScorer.fit("mahalanobis", fit, cal_hidden=cal),
        "ref": draw(3000, 0.0),
        "post_sample": draw(3000, 1.0),
        "replicate": replicate,
        "oracle_h": h_or,
        "label": f"synthetic {'gradual' if gradual else 'abrupt'} |shift|={m:g} (features)",
    }


def _chip(name: str) -> tuple[Any, Callable[[np.ndarray], np.ndarray]]:
    import torch

    from regulator.meta.model import ChipModel, ModelBundle

    torch.set_num_threads(1)
    bundle = ModelBundle.load(MODELS / name)
    chip = ChipModel(bundle, seed=0)

    def hidden(x: np.ndarray) -> np.ndarray:
        return np.asarray(chip.predict(x).hidden_counts, dtype=np.float64)

    return bundle, hidden


def nanosensor_condition(w: float, gradual: bool, seed: int, far_seed: int) -> dict:
    from regulator.tasks import make_family
    from regulator.tasks.base import interpolate

    bundle, hidden = _chip("nanosensor")
    fam = make_family("nanosensor", **bundle.task["config"])
    rng = np.random.default_rng(seed)
    nom = fam.nominal_environment()
    far = fam.sample_environment(np.random.default_rng(far_seed))

    def draw(n: int, ww: float) -> np.ndarray:
        return hidden(fam.sample(interpolate(nom, far, ww), n, rng)[0])

    pre_or, post_or = draw(3000, 0.0), draw(3000, w)
    oracle = gaussian_llr_oracle(pre_or, post_or)
    h0 = oracle(draw(3000, 0.0))
    shipped = CalibratedScorer.from_dict(bundle.calibration["ood"])

    def replicate() -> tuple[np.ndarray, np.ndarray, int]:
        pre = draw(N_PRE, 0.0)
        if gradual:
            steps = np.linspace(w / 10, w, 10)
            post = np.vstack([draw(RAMP // 10, s) for s in steps] + [draw(N_POST - RAMP, w)])
        else:
            post = draw(N_POST, w)
        x = np.vstack([pre, post])
        return x, oracle(x), N_PRE

    return {
        "model": lambda: shipped,
        "ref": pre_or,
        "post_sample": post_or,
        "replicate": replicate,
        "oracle_h": empirical_threshold(h0, ARL0),
        "label": f"nanosensor {'gradual' if gradual else 'abrupt'} w={w:g}",
    }


def gas_conditions(seed: int) -> list[dict]:
    from regulator.tasks.formats import load_gas_drift

    if not (GAS_DIR / "batch1.dat").exists():
        print(f"gas-drift skipped: no {GAS_DIR}/batch1.dat", file=sys.stderr)
        return []
    _, hidden = _chip("gas-drift")
    h = [hidden(load_gas_drift(GAS_DIR / f"batch{i}.dat")[0]) for i in range(1, 6)]
    rng = np.random.default_rng(seed)
    out = []
    for k in range(1, 5):
        oracle = gaussian_llr_oracle(h[0], h[k])
        state: dict[str, Any] = {}

        def model(state: dict[str, Any] = state) -> CalibratedScorer:
            perm = rng.permutation(len(h[0]))  # a fresh split of batch 1 per replicate
            state["held"] = h[0][perm[300:]]
            return CalibratedScorer.fit(
                "mahalanobis", h[0][perm[:150]], cal_hidden=h[0][perm[150:300]]
            )

        def replicate(
            k: int = k, oracle: Any = oracle, state: dict[str, Any] = state
        ) -> tuple[np.ndarray, np.ndarray, int]:
            post = h[k][rng.permutation(len(h[k]))[:N_POST]]
            x = np.vstack([state["held"], post])
            return x, oracle(x), len(state["held"])

        out.append(
            {
                "model": model,
                "ref": h[0],
                "post_sample": h[k],
                "replicate": replicate,
                "oracle_h": empirical_threshold(oracle(h[0]), ARL0),
                "label": f"gas-drift batch 1 (held-out) -> batch {k + 1}",
            }
        )
    return out


# -- evaluation --------------------------------------------------------------------------


def summarise(fa: int, n_pre: int, delays: list[int], missed: int, n_rep: int) -> dict[str, Any]:
    d = np.asarray(delays, dtype=float)
    return {
        "false_alarms_per_10k": 1e4 * fa / max(n_pre, 1),
        "false_alarms": fa,
        "in_distribution_samples": n_pre,
        "median_delay": float(np.median(d)) if d.size else None,
        "p90_delay": float(np.percentile(d, 90)) if d.size else None,
        "missed": missed,
        "replicates": n_rep,
    }


def tune_river(z: np.ndarray, n_kswin: int, target: float) -> dict[str, Any]:
    """Most sensitive setting of each River detector whose false-alarm rate, measured on
    standardised in-distribution chip scores ``z``, is at or below ``target``."""
    grids: dict[str, list[tuple[str, Callable[[], Any]]]] = {
        "adwin": [
            (f"delta={v:g}", lambda v=v: rdrift.ADWIN(delta=v))
            for v in (0.2, 0.05, 0.01, 2e-3, 2e-4, 2e-5)
        ],
        "page_hinkley": [
            (
                f"threshold={v:g},delta=0.1",
                lambda v=v: rdrift.PageHinkley(mode="up", threshold=v, delta=0.1, min_instances=30),
            )
            for v in (5, 10, 15, 20, 30, 50, 80)
        ],
        "kswin": [
            (
                f"alpha={v:g},window=100,stat=30",
                lambda v=v: rdrift.KSWIN(alpha=v, window_size=100, stat_size=30, seed=1),
            )
            for v in (1e-3, 1e-4, 1e-5)
        ],
    }
    chosen: dict[str, Any] = {}
    for name, grid in grids.items():
        zz = z[:n_kswin] if name == "kswin" else z
        tried = []
        for label, make in grid:
            rate = 1e4 * len(river_alarms(make, zz)) / zz.size
            tried.append({"setting": label, "false_alarms_per_10k": rate})
            if rate <= target:
                chosen[name] = {"setting": label, "make": make, "tuning": tried}
                break
        else:
            chosen[name] = {"setting": grid[-1][0], "make": grid[-1][1], "tuning": tried}
    return chosen


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    u = stats.mannwhitneyu(pos, neg, alternative="greater").statistic
    return float(u / (pos.size * neg.size))


def run(quick: bool) -> dict[str, Any]:
    t0 = time.time()
    reps = 3 if quick else 16
    reps_kswin = 1 if quick else 3
    rng = np.random.default_rng(20250101)
    conds = []
    for i, (w, grad) in enumerate(
        ((0.1, False), (0.2, False), (0.3, False), (0.5, False), (0.3, True))
    ):
        # independent in-distribution streams per condition; the same far environment
        conds.append(nanosensor_condition(w, grad, seed=7 + 10 * i, far_seed=8))
    conds.extend(gas_conditions(seed=3))
    conds += [
        synthetic_condition(2.0, False, rng),
        synthetic_condition(4.0, False, rng),
        synthetic_condition(4.0, True, rng),
    ]

    # River tuned on in-distribution chip scores (nanosensor, nominal environment),
    # standardised like the streams, resampled to a long stream
    nano0 = conds[0]
    m0 = nano0["model"]()
    ref = m0.score(nano0["ref"])
    z_pool = (ref - ref.mean()) / ref.std()
    z_tune = rng.choice(z_pool, size=20_000 if quick else 200_000)
    river = tune_river(z_tune, 2_000 if quick else 20_000, target=1e4 / ARL0)
    print(f"river tuned ({time.time() - t0:.0f} s)", file=sys.stderr)

    detectors = [*OURS, "oracle_score_cusum", "oracle_feature_cusum", *RIVER]
    results = []
    for c in conds:
        model0 = c["model"]()
        ref_s = model0.score(c["ref"])
        mu, sd = float(ref_s.mean()), float(ref_s.std())
        post_s = model0.score(c["post_sample"])
        auc = auroc(post_s, ref_s)
        n_cal = model0.calibrator.n_calibration
        s_inc, s_h = score_oracle(model0.p_values(c["post_sample"]), n_cal)
        acc = {k: {"fa": 0, "n_pre": 0, "delays": [], "missed": 0, "reps": 0} for k in detectors}
        for r in range(reps):
            model = c["model"]()
            x, llr, cp = c["replicate"]()
            s = model.score(x)
            p = model.calibrator.p_values(s)
            z = (s - mu) / sd
            alarms: dict[str, list[int]] = {
                k: ours_alarms(*OURS[k], p, model.calibrator.n_calibration) for k in OURS
            }
            alarms["oracle_feature_cusum"] = cusum_alarms(llr, c["oracle_h"])
            alarms["oracle_score_cusum"] = cusum_alarms(s_inc(p), s_h)
            for k in RIVER:
                if k == "kswin" and r >= reps_kswin:
                    continue
                alarms[k] = river_alarms(river[k]["make"], z)
            for k, al in alarms.items():
                a = np.asarray(al, dtype=int)
                st = acc[k]
                st["reps"] += 1
                st["fa"] += int(np.sum(a < cp))
                st["n_pre"] += cp
                after = a[a >= cp]
                if after.size:
                    st["delays"].append(int(after[0] - cp + 1))
                else:
                    st["missed"] += 1
        row = {
            "condition": c["label"],
            "per_sample_auroc": auc,
            "n_calibration": n_cal,
            "detectors": {
                k: summarise(v["fa"], v["n_pre"], v["delays"], v["missed"], v["reps"])
                for k, v in acc.items()
            },
        }
        results.append(row)
        print(f"{c['label']}: AUROC {auc:.3f}  ({time.time() - t0:.0f} s)", file=sys.stderr)

    # false alarms pooled over every condition's in-distribution part
    pooled = {}
    for k in detectors:
        fa = sum(r["detectors"][k]["false_alarms"] for r in results)
        n = sum(r["detectors"][k]["in_distribution_samples"] for r in results)
        pooled[k] = {"false_alarms": fa, "samples": n, "per_10k": 1e4 * fa / max(n, 1)}
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "configured_mean_samples_between_false_alarms": ARL0,
        "configured_false_alarms_per_10k": 1e4 / ARL0,
        "n_pre_change": N_PRE,
        "n_post_change": N_POST,
        "gradual_ramp_samples": RAMP,
        "replicates": reps,
        "replicates_kswin": reps_kswin,
        "ours": {k: {"detector": v[0], **v[1]} for k, v in OURS.items()},
        "default": DEFAULT,
        "river_settings": {
            k: {"setting": v["setting"], "tuning": v["tuning"]} for k, v in river.items()
        },
        "pooled_false_alarms": pooled,
        "conditions": results,
        "seconds": time.time() - t0,
        "machine": f"{cpu or platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus (torch 1 thread), Python {platform.python_version()}, "
        f"{platform.platform()}",
        "command": "python bench/drift.py" + (" --quick" if quick else ""),
    }


def goals(res: dict[str, Any]) -> list[str]:
    """The issue's goals per condition: default vs best River and vs the score oracle."""
    out = [
        "| condition | AUROC >= 0.95 | ours median | best River median | <= half River | "
        "score oracle median | <= 2x oracle |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in res["conditions"]:
        d = row["detectors"]
        ours = d[res["default"]]["median_delay"]
        riv = [
            (d[k]["median_delay"], k)
            for k in RIVER
            if d[k]["median_delay"] is not None
            and d[k]["false_alarms_per_10k"] <= res["configured_false_alarms_per_10k"] * 2
        ]
        best = min(riv) if riv else (None, "-")
        orc = d["oracle_score_cusum"]["median_delay"]

        def yn(ok: bool | None) -> str:
            return "-" if ok is None else ("yes" if ok else "no")

        out.append(
            f"| {row['condition']} | {row['per_sample_auroc']:.3f} "
            f"{yn(row['per_sample_auroc'] >= 0.95)} | {ours} | "
            f"{best[0]} ({best[1]}) | "
            f"{yn(None if ours is None or best[0] is None else ours <= best[0] / 2)} | {orc} | "
            f"{yn(None if ours is None or orc is None else ours <= 2 * orc)} |"
        )
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Drift detection benchmark",
        "",
        f"Command: `{res['command']}`  ",
        f"Machine: {res['machine']}  ",
        f"Wall time: {res['seconds']:.0f} s",
        "",
        "Scores: Mahalanobis distance of the chip's hidden spike counts "
        "(`ChipModel(ModelBundle.load(models/...), seed=0).predict(x).hidden_counts`), "
        "conformal p-values (nanosensor: the model folder's shipped calibration, "
        f"{res['conditions'][0].get('n_calibration')} scores; "
        "gas: 150 fit + 150 calibration samples of batch 1, a fresh split per replicate). "
        "Synthetic rows score raw Gaussian features (no chip), for reference.",
        "",
        "Configured mean samples between false alarms: "
        f"{res['configured_mean_samples_between_false_alarms']:g}"
        f" ({res['configured_false_alarms_per_10k']:g} per 10,000). Each replicate: "
        f"{res['n_pre_change']} in-distribution samples (gas: the held-out rest of batch 1) "
        f"then {res['n_post_change']} after the change; {res['replicates']} replicates per "
        f"condition ({res['replicates_kswin']} for KSWIN, which is slow). Delay counts samples "
        "from the change (gradual: from the start of the "
        f"{res['gradual_ramp_samples']}-sample ramp) to the first alarm, inclusive.",
        "",
        f"Ours: {', '.join(f'{k} = {v}' for k, v in res['ours'].items())}; default "
        f"`{res['default']}` is what the daemon runs (detector `cusum`, a = 0.5, threshold "
        "calibrated on the exact law of conformal p-values of the model's n calibration "
        "scores; `ours_cusum_continuous_h` is the same CUSUM with the first run's "
        "threshold for continuous p-values).",
        "",
        "River settings (most sensitive on the grid with false alarms at or below ours, "
        "measured on 200k resampled standardised in-distribution nanosensor chip scores): "
        + "; ".join(f"{k} {v['setting']}" for k, v in res["river_settings"].items()),
        "",
        "False alarms per 10,000 pooled over every condition's in-distribution samples: "
        + "; ".join(
            f"{k} {v['per_10k']:.1f} ({v['false_alarms']}/{v['samples']})"
            for k, v in res["pooled_false_alarms"].items()
        ),
        "",
        "## Goals (default detector)",
        "",
        "River detectors count only where their false-alarm rate in that condition is at most "
        "twice the configured one.",
        "",
        *goals(res),
        "",
        "## All detectors",
        "",
        "| condition | AUROC | detector | FA / 10k | median delay | p90 delay | missed |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in res["conditions"]:
        for i, (k, v) in enumerate(row["detectors"].items()):
            md = "-" if v["median_delay"] is None else f"{v['median_delay']:g}"
            p9 = "-" if v["p90_delay"] is None else f"{v['p90_delay']:g}"
            head = f"| {row['condition']} | {row['per_sample_auroc']:.3f} |" if i == 0 else "| | |"
            lines.append(
                f"{head} {k} | {v['false_alarms_per_10k']:.1f} | {md} | {p9} | "
                f"{v['missed']}/{v['replicates']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    res = run(args.quick)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "drift_quick" if args.quick else "drift"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    (out / f"{stem}.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
