"""Drift-detection benchmark: our calibrated CUSUMs vs River's ADWIN, PageHinkley, KSWIN
and an oracle CUSUM that knows the post-change distribution, on the same streams.

Run by hand (about 3-4 minutes on 2 cores)::

    python bench/drift.py            # writes bench/results/drift.{json,md}
    python bench/drift.py --quick    # a smoke run, a few seconds

Streams (each replicate: ``N_PRE`` in-distribution samples, then the change):
- synthetic Gaussian features (d=16), abrupt mean shifts of Mahalanobis length 1, 2, 3
  and a gradual one (linear ramp over 500 samples) to length 3;
- the ``nanosensor`` task family (features: the per-sample [sensors, time] array
  flattened), nominal environment, then a drifted environment (``interpolate`` of
  nominal and a random environment by w), abrupt and gradual;
- the gas-drift batches (shared/data/gas-drift): fit and calibrate on batch 1, stream the
  held-out part of batch 1 then batch 2 (random splits per replicate).

Every detector sees the same stream: ours the conformal p-values of the Mahalanobis
score; River's the same score, standardised by its calibration mean and std; the oracle
the log-likelihood ratio of the features under the true (synthetic) or a Gaussian fitted
to plentiful post-change samples (task, gas), with its threshold set for the same ARL0.
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
from regulator.monitor.detect import _calibrate_threshold  # noqa: E402

ARL0 = 2000.0  # configured mean samples between false alarms: 5 per 10,000
N_PRE = 2000
N_POST = 1000
RAMP = 500
GAS_DIR = Path(os.environ.get("GAS_DRIFT_DIR", "/work/shared/data/gas-drift"))


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
    p_post: np.ndarray, n_cal: int, rng: np.random.Generator
) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """CUSUM on the true log density ratio of the p-values (post-change law estimated
    from plentiful post-change samples by a histogram of -log p; in-control law: the
    uniform grid 1/(n_cal+1)...1): the fastest any detector on this score can be."""
    edges = np.linspace(0.0, np.log(n_cal + 1) + 1e-9, 25)
    p_h0 = rng.integers(1, n_cal + 2, size=50_000) / (n_cal + 1)

    def hist(p: np.ndarray) -> np.ndarray:
        h = np.histogram(-np.log(p), bins=edges)[0] + 0.5
        return h / h.sum()

    llr = np.log(hist(p_post) / hist(p_h0))

    def inc(p: np.ndarray) -> np.ndarray:
        return llr[np.clip(np.searchsorted(edges, -np.log(p), side="right") - 1, 0, llr.size - 1)]

    return inc, empirical_threshold(inc(p_h0), ARL0)


def river_alarms(make: Callable[[], Any], z: np.ndarray) -> list[int]:
    det = make()
    out = []
    for i, v in enumerate(z.tolist()):
        det.update(v)
        if det.drift_detected:
            out.append(i)
    return out


def ours_alarms(name: str, cfg: dict[str, float], p: np.ndarray) -> list[int]:
    det = make_detector(name, mean_samples_between_false_alarms=ARL0, **cfg)
    out: list[int] = []
    for k in range(0, p.size, 256):  # batches, as the service would feed them
        det.update(p[k : k + 256])
        out.extend(det.alarm_indices)
    return out


OURS = {
    "ours_cusum": ("cusum", {"a": 0.3}),
    "ours_probit_cusum": ("probit_cusum", {"delta": 0.5}),
}


# -- streams -----------------------------------------------------------------------------


def gaussian_llr_oracle(pre: np.ndarray, post: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """LLR of N(mu1, S) vs N(mu0, S), S a pooled shrinkage covariance."""
    mu0, mu1 = pre.mean(0), post.mean(0)
    sc = MahalanobisScorer().fit(np.vstack([pre - mu0, post - mu1]))
    assert sc._precision is not None
    w = sc._precision @ (mu1 - mu0)
    c = 0.5 * (mu1 @ sc._precision @ mu1 - mu0 @ sc._precision @ mu0)
    return lambda x: x @ w - c


class Condition:
    """One benchmark condition: draws replicates ``(features, change_index)``."""

    def __init__(self, name: str, kind: str, magnitude: str) -> None:
        self.name, self.kind, self.magnitude = name, kind, magnitude


def synthetic_condition(m: float, gradual: bool, rng: np.random.Generator, d: int = 16) -> dict:
    direction = rng.normal(size=d)
    mu1 = m * direction / np.linalg.norm(direction)

    def draw(n: int, w: np.ndarray | float = 1.0) -> np.ndarray:
        return rng.normal(size=(n, d)) + np.asarray(w).reshape(-1, 1) * mu1

    w_post = np.clip((np.arange(N_POST) + 1) / RAMP, 0, 1) if gradual else 1.0
    h_or = _calibrate_threshold(("normal", float(m)), ARL0)

    def replicate() -> tuple[np.ndarray, np.ndarray, int]:
        x = np.vstack([draw(N_PRE, 0.0), draw(N_POST, w_post)])
        return x, x @ mu1 / m * m - 0.5 * m * m, N_PRE  # exact LLR of the final shift

    return {
        "fit": draw(3000, 0.0),
        "cal": draw(3000, 0.0),
        "post_sample": draw(3000, 1.0),
        "replicate": replicate,
        "oracle_h": h_or,
        "label": f"synthetic {'gradual' if gradual else 'abrupt'} |shift|={m:g}",
    }


def nanosensor_condition(w: float, gradual: bool, seed: int) -> dict:
    from regulator.tasks import make_family
    from regulator.tasks.base import interpolate

    fam = make_family("nanosensor", seed=seed)
    rng = np.random.default_rng(seed)
    nom = fam.nominal_environment()
    far = fam.sample_environment(rng)

    def draw(n: int, ww: float) -> np.ndarray:
        x, _ = fam.sample(interpolate(nom, far, ww), n, rng)
        return x.reshape(n, -1).astype(np.float64)

    pre_or, post_or = draw(3000, 0.0), draw(3000, w)
    oracle = gaussian_llr_oracle(pre_or, post_or)
    h0 = oracle(draw(3000, 0.0))

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
        "fit": draw(3000, 0.0),
        "cal": draw(3000, 0.0),
        "post_sample": post_or,
        "replicate": replicate,
        "oracle_h": empirical_threshold(h0, ARL0),
        "label": f"nanosensor {'gradual' if gradual else 'abrupt'} w={w:g}",
    }


def gas_condition(seed: int) -> dict | None:
    try:
        from regulator.tasks.formats import load_gas_drift
    except ImportError:
        return None
    if not (GAS_DIR / "batch1.dat").exists():
        return None
    b = [
        load_gas_drift(GAS_DIR / f"batch{i}.dat")[0].reshape(-1, 128).astype(float) for i in (1, 2)
    ]
    rng = np.random.default_rng(seed)
    t = [np.sign(v) * np.log1p(np.abs(v)) for v in b]
    mu, sd = t[0].mean(0), t[0].std(0) + 1e-9
    t = [(v - mu) / sd for v in t]
    perm = rng.permutation(len(t[0]))
    fit, cal, held = t[0][perm[:220]], t[0][perm[220:345]], t[0][perm[345:]]
    oracle = gaussian_llr_oracle(t[0], t[1])
    state = {"rng": rng}

    def replicate() -> tuple[np.ndarray, np.ndarray, int]:
        post = t[1][state["rng"].permutation(len(t[1]))[:N_POST]]
        pre = held[state["rng"].permutation(len(held))]
        x = np.vstack([pre, post])
        return x, oracle(x), len(pre)

    return {
        "fit": fit,
        "cal": cal,
        "post_sample": t[1],
        "replicate": replicate,
        "oracle_h": empirical_threshold(oracle(t[0]), ARL0),
        "label": "gas-drift batch 1 (held-out) -> batch 2",
    }


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


def tune_river(rng: np.random.Generator, n: int, n_kswin: int, target: float) -> dict[str, Any]:
    """Most sensitive setting of each River detector whose false-alarm rate, measured on
    standardised in-distribution scores (chi-square, d=16), is at or below ``target``."""
    z = (stats.chi2.rvs(16, size=n, random_state=rng) - 16) / np.sqrt(32)
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
            for v in (5, 10, 20, 30, 50, 80)
        ],
        "kswin": [
            (
                f"alpha={v:g},window=100,stat=30",
                lambda v=v: rdrift.KSWIN(alpha=v, window_size=100, stat_size=30, seed=1),
            )
            for v in (1e-3, 1e-5)
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


def run(quick: bool) -> dict[str, Any]:
    t0 = time.time()
    reps = 3 if quick else 16
    reps_kswin = 1 if quick else 3
    rng = np.random.default_rng(20250101)
    river = tune_river(
        rng, 20_000 if quick else 200_000, 2_000 if quick else 20_000, target=1e4 / ARL0
    )
    conds = [
        synthetic_condition(2.0, False, rng),
        synthetic_condition(4.0, False, rng),
        synthetic_condition(6.0, False, rng),
        synthetic_condition(4.0, True, rng),
    ]
    for w, grad in ((0.1, False), (0.3, False), (0.3, True)):
        try:
            conds.append(nanosensor_condition(w, grad, seed=7))
        except Exception as exc:  # the task family is another engineer's work in progress
            print(f"nanosensor condition skipped: {exc!r}", file=sys.stderr)
    gas = gas_condition(seed=3)
    if gas is not None:
        conds.append(gas)

    detectors = [
        *OURS,
        "oracle_score_cusum",
        "oracle_feature_cusum",
        "adwin",
        "page_hinkley",
        "kswin",
    ]
    results = []
    for c in conds:
        model = CalibratedScorer.fit("mahalanobis", c["fit"], cal_hidden=c["cal"])
        cal_s = model.score(c["cal"])
        mu, sd = float(cal_s.mean()), float(cal_s.std())
        post_s = model.score(c["post_sample"])
        auroc = float(
            stats.mannwhitneyu(post_s, cal_s, alternative="greater").statistic
            / (post_s.size * cal_s.size)
        )
        s_inc, s_h = score_oracle(model.p_values(c["post_sample"]), cal_s.size, rng)
        acc = {k: {"fa": 0, "n_pre": 0, "delays": [], "missed": 0, "reps": 0} for k in detectors}
        for r in range(reps):
            x, llr, cp = c["replicate"]()
            s = model.score(x)
            p = model.calibrator.p_values(s)
            z = (s - mu) / sd
            alarms: dict[str, list[int]] = {k: ours_alarms(*OURS[k], p) for k in OURS}
            alarms["oracle_feature_cusum"] = cusum_alarms(llr, c["oracle_h"])
            alarms["oracle_score_cusum"] = cusum_alarms(s_inc(p), s_h)
            for k in ("adwin", "page_hinkley", "kswin"):
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
            "per_sample_auroc": auroc,
            "detectors": {
                k: summarise(v["fa"], v["n_pre"], v["delays"], v["missed"], v["reps"])
                for k, v in acc.items()
            },
        }
        results.append(row)
        print(f"{c['label']}: AUROC {auroc:.3f}  ({time.time() - t0:.0f} s)", file=sys.stderr)

    return {
        "configured_mean_samples_between_false_alarms": ARL0,
        "configured_false_alarms_per_10k": 1e4 / ARL0,
        "n_pre_change": N_PRE,
        "n_post_change": N_POST,
        "gradual_ramp_samples": RAMP,
        "replicates": reps,
        "replicates_kswin": reps_kswin,
        "ours": {k: {"detector": v[0], **v[1]} for k, v in OURS.items()},
        "river_settings": {
            k: {"setting": v["setting"], "tuning": v["tuning"]} for k, v in river.items()
        },
        "conditions": results,
        "seconds": time.time() - t0,
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}, {platform.platform()}",
        "command": "python bench/drift.py" + (" --quick" if quick else ""),
    }


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Drift detection benchmark",
        "",
        f"Command: `{res['command']}`  ",
        f"Machine: {res['machine']}  ",
        f"Wall time: {res['seconds']:.0f} s",
        "",
        "Configured mean samples between false alarms: "
        f"{res['configured_mean_samples_between_false_alarms']:g}"
        f" ({res['configured_false_alarms_per_10k']:g} per 10,000). Each replicate: "
        f"{res['n_pre_change']} in-distribution samples then {res['n_post_change']} after the "
        f"change; {res['replicates']} replicates per condition "
        f"({res['replicates_kswin']} for KSWIN, "
        "which is slow). Delay counts samples from the change (gradual: from the start of the "
        f"{res['gradual_ramp_samples']}-sample ramp) to the first alarm, inclusive.",
        "",
        "River settings (most sensitive on the grid with false alarms at or below ours, "
        "measured on 200k standardised in-distribution scores): "
        + "; ".join(f"{k} {v['setting']}" for k, v in res["river_settings"].items()),
        "",
        "| condition | AUROC | detector | FA / 10k | median delay | p90 delay | missed |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in res["conditions"]:
        for i, (k, v) in enumerate(row["detectors"].items()):
            md = "-" if v["median_delay"] is None else f"{v['median_delay']:g}"
            p9 = "-" if v["p90_delay"] is None else f"{v['p90_delay']:g}"
            lines.append(
                f"| {row['condition'] if i == 0 else ''} | "
                f"{row['per_sample_auroc']:.3f} | {k} | {v['false_alarms_per_10k']:.1f} | "
                f"{md} | {p9} | {v['missed']}/{v['replicates']} |"
                if i == 0
                else f"| | | {k} | {v['false_alarms_per_10k']:.1f} | {md} | {p9} | "
                f"{v['missed']}/{v['replicates']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few-second smoke run")
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
