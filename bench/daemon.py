"""Throughput and latency through the daemon's runtime against the bare chip forward.

Run: ``python bench/daemon.py [--prior DIR] [--n 400] [--rounds 3]`` (writes
bench/results/daemon.json and daemon.md). Without ``--prior`` it uses models/nanosensor
when present, else meta-trains a tiny prior (as the service tests do) and says so.

Measured in one process, one torch thread per thread, interleaved rounds:
- bare: ``ChipModel.predict`` on one sample ``[1, C, L]`` (the chip forward alone);
- runtime: ``Runtime.process`` (forward + monitors + metrics + label matching), the
  daemon's per-sample path;
- batched (``--batch``, default 16): ``ChipModel.predict`` on ``[B, C, L]`` against
  ``Runtime.process_batch``, which is what the daemon's main loop calls with the
  samples that arrived together;
- while labels are persisted: ``Runtime.process`` while another thread hands the runtime
  labelled samples (16 per call, with inputs) back to back, against rounds without it;
- during recalibration: ``Runtime.process`` while another thread runs recalibrations
  back to back, their candidates built in the daemon's worker process
  (:class:`regulator.service.executor.ProcessExecutor`);
- ``/metrics``: exposition generated in-process, and scraped over HTTP from the
  daemon's FastAPI app under uvicorn.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from prometheus_client import generate_latest  # noqa: E402

from regulator.meta.model import ChipModel  # noqa: E402
from regulator.policy.model import parse_policy  # noqa: E402
from regulator.service.api import build_app, serve  # noqa: E402
from regulator.service.daemon import SWITCH_INTERVAL_S  # noqa: E402
from regulator.service.executor import ProcessExecutor  # noqa: E402
from regulator.service.runtime import Runtime  # noqa: E402
from regulator.service.threads import pin_threads  # noqa: E402
from regulator.tasks.base import make_family  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results"


def tiny_prior(folder: Path) -> Path:
    from regulator.meta.train import TrainConfig, build_trainer, finalise, train_steps

    tr = build_trainer(TrainConfig(iterations=30, meta_batch=4, hidden=(32,), n_steps=16))
    train_steps(tr, 30, progress=False)
    finalise(tr).save(folder)
    return folder


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def summary(lat_s: list[float]) -> dict[str, float]:
    return {
        "n": len(lat_s),
        "samples_per_s": len(lat_s) / sum(lat_s) if lat_s else 0.0,
        "p50_ms": pct(lat_s, 50) * 1e3,
        "p99_ms": pct(lat_s, 99) * 1e3,
        "p999_ms": pct(lat_s, 99.9) * 1e3,
        "max_ms": max(lat_s) * 1e3 if lat_s else float("nan"),
        "mean_ms": float(np.mean(lat_s)) * 1e3 if lat_s else float("nan"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior", type=Path)
    ap.add_argument("--n", type=int, default=400, help="samples per round and path")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--runs", type=int, default=3, help="whole measurements; median and range")
    ap.add_argument(
        "--min-recalibrations",
        type=int,
        default=3,
        help="the 'during' phase lasts until this many recalibrations ended in it",
    )
    a = ap.parse_args()
    pin_threads()  # as the daemon does: one torch and one BLAS thread
    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    shipped = REPO / "models" / "nanosensor"
    if a.prior is not None:
        prior, prior_kind = a.prior, str(a.prior)
    elif (shipped / "model.json").exists():
        prior, prior_kind = shipped, "models/nanosensor"
    else:
        prior, prior_kind = tiny_prior(tmp / "prior"), "tiny (32 hidden, 16 steps, 30 iterations)"
    runs = [measure(a, prior, prior_kind, tmp / f"run{i}") for i in range(a.runs)]
    write(a, runs)
    return 0


def measure(a: argparse.Namespace, prior: Path, prior_kind: str, tmp: Path) -> dict[str, Any]:
    """One whole measurement (every path), in a fresh state directory."""
    policy = parse_policy(
        {
            "device": {"id": "bench"},
            "model": {"prior": str(prior)},
            "rules": [],
            "source": {"kind": "http"},
            "recalibration": {
                "k_shot": 5,
                "holdout_per_class": 3,
                "max_per_hour": 3600,
                "allow_label_free_fallback": False,
            },
        }
    )
    rt = Runtime(policy, tmp / "state")
    fam = make_family(str(rt.serving.bundle.task.get("family", "nanosensor")))
    rng = np.random.default_rng(0)
    # The environment the served model is calibrated for (the common case); the
    # recalibrations below adapt to a drifted one.
    env = fam.nominal_environment()
    x, _ = fam.sample(env, a.n, rng)
    drifted = fam.sample_environment(rng)
    rt.prime_detector_thresholds()  # as the daemon does at startup
    gc.freeze()  # likewise
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # likewise
    bare = ChipModel(rt.serving.bundle, seed=policy.device.seed)
    for i in range(20):  # warm-up both paths
        bare.predict(x[i : i + 1])
        rt.process(f"w{i}", x[i])

    lat: dict[str, list[float]] = {"bare": [], "runtime": [], "during": []}
    # seconds per sample, per batch size
    batched: dict[int, dict[str, list[float]]] = {b: {"bare": [], "runtime": []} for b in a.batch}
    # The daemon's loop with more queued (Runtime.process_batch(defer=True)): the
    # monitors run over blocks of batches, flushed at the end (timed) as a round's end.
    loaded: dict[int, dict[str, list[float]]] = {
        b: {"bare": [], "runtime": []} for b in (1, *a.batch)
    }
    chunked: dict[int, dict[str, list[float]]] = {
        b: {"bare": [], "runtime": [], "array": []} for b in (1, *a.batch)
    }
    seq = 0
    for _ in range(a.rounds):
        for bsz in a.batch:  # bare and runtime alternate batch by batch
            for i in range(0, a.n - bsz + 1, bsz):
                t0 = time.perf_counter()
                bare.predict(x[i : i + bsz])
                batched[bsz]["bare"].append((time.perf_counter() - t0) / bsz)
                t0 = time.perf_counter()
                rt.process_batch([(f"b{seq}-{k}", x[i + k]) for k in range(bsz)])
                batched[bsz]["runtime"].append((time.perf_counter() - t0) / bsz)
                seq += 1
        for bsz, d in loaded.items():
            # The items as the daemon's source hands them over, made before the timer
            # (the bare forward makes no ids either).
            starts = range(0, a.n - bsz + 1, bsz)
            items = [[(f"d{seq}-{i}-{k}", x[i + k]) for k in range(bsz)] for i in starts]
            ids = [[sid for sid, _ in it] for it in items]
            seq += 1
            # Alternating batch by batch: each call in the same machine state.
            for i, it in zip(starts, items, strict=True):
                t0 = time.perf_counter()
                bare.predict(x[i : i + bsz])
                d["bare"].append((time.perf_counter() - t0) / bsz)
                t0 = time.perf_counter()
                rt.process_batch(it, defer=True)
                d["runtime"].append((time.perf_counter() - t0) / bsz)
            t0 = time.perf_counter()
            rt.flush()  # the round's end: what is left of the block
            d["runtime"][-1] += (time.perf_counter() - t0) / bsz
            # Each path alone over the round's samples, one after the other (harsher:
            # back to back, the bare forward runs with warmer caches than when it
            # alternates with the runtime's other work). The array path too.
            c = chunked[bsz]
            t0 = time.perf_counter()
            for i in starts:
                bare.predict(x[i : i + bsz])
            c["bare"].append((time.perf_counter() - t0) / len(items) / bsz)
            items = [[(f"e{seq}-{i}-{k}", x[i + k]) for k in range(bsz)] for i in starts]
            t0 = time.perf_counter()
            for it in items:
                rt.process_batch(it, defer=True)
            rt.flush()
            c["runtime"].append((time.perf_counter() - t0) / len(items) / bsz)
            t0 = time.perf_counter()
            for i, sids in zip(starts, ids, strict=True):
                rt.process_array(sids, x[i : i + bsz], defer=True)
            rt.flush()
            c["array"].append((time.perf_counter() - t0) / len(items) / bsz)
        for i in range(a.n):  # alternate sample by sample: same machine state for both
            t0 = time.perf_counter()
            bare.predict(x[i : i + 1])
            lat["bare"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            rt.process(f"r{seq}", x[i])
            lat["runtime"].append(time.perf_counter() - t0)
            seq += 1

    # Labelled samples for the two threaded paths, drawn before anything is timed, so
    # that the simulator's own work never counts against the daemon.
    n_cls = rt.serving.bundle.cfg.n_outputs
    label_sets = [
        fam.sample(drifted, 16 * n_cls, np.random.default_rng(100 + j)) for j in range(40)
    ]

    # while labels are persisted: another thread hands the runtime labelled samples (16
    # at a time, with their inputs, as POST /v1/feedback does; each call checked,
    # fsynced once and matched). "paced": one label per LABEL_FRACTION samples served
    # (the embedded default feeds back 30% of labels); "burst": back to back, the worst
    # case. Rounds with and without the feeder alternate: the same machine state.
    for key in ("labels_paced", "labels_burst", "labels_off"):
        lat[key] = []
    mode = ["off"]
    served = [0]
    stop_feed = threading.Event()
    fed = {"paced": 0, "burst": 0}

    def feed_labels() -> None:
        j = 0
        while not stop_feed.is_set():
            m = mode[0]
            if m == "off" or (m == "paced" and served[0] * LABEL_FRACTION - fed[m] < 16):
                time.sleep(0.001)
                continue
            xl, yl = label_sets[j % len(label_sets)]
            k0 = 16 * (j % (len(yl) // 16))
            rt.add_labels([(f"p{j}-{k}", int(yl[k]), xl[k]) for k in range(k0, k0 + 16)])
            fed[m] += 16
            j += 1

    feeder = threading.Thread(target=feed_labels, daemon=True)
    feeder.start()
    for _ in range(a.rounds):
        for m in ("paced", "off", "burst", "off"):
            served[0] = 0
            if m == "paced":
                fed["paced"] = 0
            mode[0] = m
            time.sleep(0.02)  # the feeder is running (or has stopped) before timing
            for i in range(a.n):
                t0 = time.perf_counter()
                rt.process(f"q{seq}", x[i])
                lat[f"labels_{m}"].append(time.perf_counter() - t0)
                served[0] += 1
                seq += 1
            mode[0] = "off"
    stop_feed.set()
    feeder.join()
    labels_fed = dict(fed)

    # during recalibration: fresh labels, then recalibrate, back to back in a thread
    results: list[dict[str, Any]] = []
    stop = threading.Event()

    def recalibrate_loop() -> None:
        torch.set_num_threads(a.threads)
        j = 0
        while not stop.is_set():
            xl, yl = label_sets[j % len(label_sets)]
            rt.add_labels([(f"l{j}-{k}", int(yl[k]), xl[k]) for k in range(len(yl))])
            in_recal.set()
            res = rt.recalibrate("http", "supervised")
            in_recal.clear()
            results.append({"outcome": res.outcome, "seconds": res.seconds})
            j += 1

    runner = ProcessExecutor()
    runner.warm()
    rt.executor = runner
    # A sample counts as "during" when a recalibration job was running for all of it;
    # samples served between jobs (the loop handing over the next labels) are left out.
    in_recal = threading.Event()
    active = threading.Event()
    th = threading.Thread(target=lambda: (active.set(), recalibrate_loop()), daemon=True)
    th.start()
    active.wait()
    # Serving has priority over a recalibration's in-process steps (regulator.turns), so
    # under this saturated loop a recalibration takes longer: the phase lasts until
    # --min-recalibrations have ended inside it (and at least rounds x n samples).
    n_results0, t_during0, i = len(results), time.monotonic(), 0
    while i < a.rounds * a.n or len(results) - n_results0 < a.min_recalibrations:
        if time.monotonic() - t_during0 > 600:
            raise RuntimeError("recalibrations did not end within 600 s of serving")
        before = in_recal.is_set()
        t0 = time.perf_counter()
        rt.process(f"d{seq}", x[i % a.n])
        dt = time.perf_counter() - t0
        if before and in_recal.is_set():
            lat["during"].append(dt)
        seq += 1
        i += 1
    during_s = time.monotonic() - t_during0
    ended = results[n_results0 : len(results)]  # those that ended inside the phase
    stop.set()
    th.join()
    runner.shutdown()

    # /metrics: in-process exposition and a real HTTP scrape
    gen = []
    for _ in range(50):
        t0 = time.perf_counter()
        body = generate_latest(rt.metrics_registry)
        gen.append(time.perf_counter() - t0)
    stub = SimpleNamespace()  # only /metrics is called
    server = serve(build_app(stub, rt.metrics_registry, lambda: None, 1 << 20), "127.0.0.1", 0)  # type: ignore[arg-type]
    scrape = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as c:
            c.get("/metrics")
            for _ in range(50):
                t0 = time.perf_counter()
                r = c.get("/metrics")
                scrape.append(time.perf_counter() - t0)
                r.raise_for_status()
    finally:
        server.stop()
    rt.close()

    s = {k: summary(v) for k, v in lat.items()}
    ratio = s["runtime"]["samples_per_s"] / s["bare"]["samples_per_s"]
    sb = {b: {k: len(v) / sum(v) for k, v in d.items()} for b, d in batched.items()}
    ratio_b = {b: d["runtime"] / d["bare"] for b, d in sb.items()}
    sl = {b: {k: len(v) / sum(v) for k, v in d.items()} for b, d in loaded.items()}
    ratio_l = {b: d["runtime"] / d["bare"] for b, d in sl.items()}
    sc = {b: {k: len(v) / sum(v) for k, v in d.items()} for b, d in chunked.items()}
    ratio_c = {b: d["runtime"] / d["bare"] for b, d in sc.items()}
    ratio_a = {b: d["array"] / d["bare"] for b, d in sc.items()}
    p99_ratio = s["during"]["p99_ms"] / s["runtime"]["p99_ms"]
    report = {
        "command": "python " + " ".join(sys.argv),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "torch_threads": a.threads,
        },
        "prior": prior_kind,
        "network": {
            "hidden": list(rt.serving.bundle.cfg.hidden),
            "n_steps": rt.serving.bundle.cfg.n_steps,
            "inputs": list(x.shape[1:]),
        },
        "paths": s,
        "runtime_over_bare_throughput": ratio,
        "batched_samples_per_s": {str(b): v for b, v in sb.items()},
        "runtime_over_bare_throughput_batched": {str(b): v for b, v in ratio_b.items()},
        "loaded_samples_per_s": {str(b): v for b, v in sl.items()},
        "runtime_over_bare_throughput_loaded": {str(b): v for b, v in ratio_l.items()},
        "chunked_samples_per_s": {str(b): v for b, v in sc.items()},
        "runtime_over_bare_throughput_chunked": {str(b): v for b, v in ratio_c.items()},
        "array_over_bare_throughput_chunked": {str(b): v for b, v in ratio_a.items()},
        "goal_throughput_ratio": 0.95,
        "p99_during_over_outside": p99_ratio,
        "labels_persisted_over_without": s["labels_paced"]["samples_per_s"]
        / s["labels_off"]["samples_per_s"],
        "labels_burst_over_without": s["labels_burst"]["samples_per_s"]
        / s["labels_off"]["samples_per_s"],
        "labels_fed": labels_fed,
        "goal_p99_ratio": 1.5,
        "recalibrations_during": {
            "n": len(ended),
            "outcomes": {
                o: sum(r["outcome"] == o for r in ended) for o in {r["outcome"] for r in ended}
            },
            "mean_seconds": float(np.mean([r["seconds"] for r in ended])) if ended else None,
            "phase_seconds": during_s,
        },
        "metrics_scrape_ms": {
            "generate_p50": pct(gen, 50) * 1e3,
            "generate_p99": pct(gen, 99) * 1e3,
            "http_p50": pct(scrape, 50) * 1e3,
            "http_p99": pct(scrape, 99) * 1e3,
            "bytes": len(body),
        },
    }
    return report


G95 = "≥ 0.95×"
LABEL_FRACTION = 0.3
"""Labels per sample served in the paced label rounds (the embedded default's feedback)."""


def _spread(runs: list[dict[str, Any]], get: Any) -> str:
    xs = sorted(float(get(r)) for r in runs)
    return f"{float(np.median(xs)):.2f}× [{xs[0]:.2f}, {xs[-1]:.2f}]"


def write(a: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    """daemon.json (every run) and daemon.md (median and range, and the median run)."""
    key = [r["runtime_over_bare_throughput"] for r in runs]
    report = runs[int(np.argsort(key)[len(key) // 2])]  # the median run's detail
    s, prior_kind, ratio = report["paths"], report["prior"], report["runtime_over_bare_throughput"]
    sb = {int(b): v for b, v in report["batched_samples_per_s"].items()}
    ratio_b = {int(b): v for b, v in report["runtime_over_bare_throughput_batched"].items()}
    p99_ratio = report["p99_during_over_outside"]
    OUT.mkdir(exist_ok=True)
    (OUT / "daemon.json").write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    intake = [r["labels_persisted_over_without"] for r in runs]
    burst = sorted(r["labels_burst_over_without"] for r in runs)
    spread_rows = "\n".join(
        f"| {what} | {_spread(runs, get)} | {goal} |"
        for what, get, goal in (
            *((f"runtime / bare forward, batch {b}, more queued (monitors deferred)",
               lambda r, b=b: r["runtime_over_bare_throughput_loaded"][str(b)], G95)
              for b in (1, *a.batch)),
            *((f"the same, each path alone over a round (harsher), batch {b}",
               lambda r, b=b: r["runtime_over_bare_throughput_chunked"][str(b)], "")
              for b in (1, *a.batch)),
            *((f"the same, the samples as one array (`process_array`), batch {b}",
               lambda r, b=b: r["array_over_bare_throughput_chunked"][str(b)], "")
              for b in (1, *a.batch)),
            ("runtime / bare forward, batch 1, nothing queued",
             lambda r: r["runtime_over_bare_throughput"], ""),
            *((f"runtime / bare forward, batch {b}, nothing queued",
               lambda r, b=b: r["runtime_over_bare_throughput_batched"][str(b)], "")
              for b in a.batch),
            ("p99 during recalibrations / p99 outside",
             lambda r: r["p99_during_over_outside"], "≤ 1.5×"),
        )
    )  # fmt: skip
    if intake:
        xs = sorted(intake)
        spread_rows += (
            f"\n| samples/s while labels are persisted / without | "
            f"{float(np.median(xs)):.2f}× [{xs[0]:.2f}, {xs[-1]:.2f}] | ≥ 0.9× |"
            f"\n| the same, labels fed back to back (worst case) | "
            f"{float(np.median(burst)):.2f}× [{burst[0]:.2f}, {burst[-1]:.2f}] | |"
        )
    results_n = report["recalibrations_during"]["n"]
    rows = "\n".join(
        f"| {name} | {v['samples_per_s']:.0f} | {v['p50_ms']:.3f} | {v['p99_ms']:.3f} "
        f"| {v['p999_ms']:.3f} | {v['max_ms']:.2f} |"
        for name, v in (
            ("bare chip forward (ChipModel.predict, batch 1)", s["bare"]),
            ("whole runtime (Runtime.process)", s["runtime"]),
            ("runtime during recalibration", s["during"]),
            ("runtime while labels are persisted (paced)", s["labels_paced"]),
            ("runtime while labels are persisted back to back", s["labels_burst"]),
            ("runtime in the rounds between (no labels)", s["labels_off"]),
        )
    )
    brows = "\n".join(
        f"| bare chip forward, batch {b} | {d['bare']:.0f} | | | | |\n"
        f"| whole runtime, `process_batch` of {b} | {d['runtime']:.0f} | | | | |"
        for b, d in sb.items()
    )
    sl = {int(b): v for b, v in report["loaded_samples_per_s"].items()}
    brows += "\n" + "\n".join(
        f"| bare chip forward, batch {b} (beside the next row) | {d['bare']:.0f} | | | | |\n"
        f"| runtime, `process_batch(defer=True)` of {b}, flushed at the end | "
        f"{d['runtime']:.0f} | | | | |"
        for b, d in sl.items()
    )
    ratio_l = {int(b): v for b, v in report["runtime_over_bare_throughput_loaded"].items()}
    lratios = ", ".join(f"**{r:.2f}×** at batch {b}" for b, r in ratio_l.items())
    ratio_c = {int(b): v for b, v in report["runtime_over_bare_throughput_chunked"].items()}
    cratios = ", ".join(f"**{r:.2f}×** at batch {b}" for b, r in ratio_c.items())
    bratios = ", ".join(f"**{r:.2f}×** at batch {b}" for b, r in ratio_b.items())
    m = report["metrics_scrape_ms"]
    rec = report["recalibrations_during"]

    md = f"""# Daemon throughput and latency

Command: `{report["command"]}` · {report["machine"]["platform"]}, {report["machine"]["cpus"]} CPUs
(shared), torch {report["machine"]["torch"]}, {a.threads} torch thread(s) · prior: {prior_kind},
network hidden {report["network"]["hidden"]}, {report["network"]["n_steps"]} steps ·
{a.rounds} interleaved rounds × {a.n} samples per path · {len(runs)} runs.

Median [range] over the {len(runs)} runs:

| ratio | median [min, max] | goal (issue 11) |
|---|---:|---|
{spread_rows}

The median run (by the batch-1 ratio):

| path | samples/s | p50 ms | p99 ms | p99.9 ms | max ms |
|---|---:|---:|---:|---:|---:|
{rows}

{brows}

- Runtime over bare forward, throughput, with more samples queued (the daemon's main
  loop under load: the monitor updates wait for a block of up to 1024 samples or 50 ms,
  `regulator.service.inference`, and the round's end flushes them; the items made
  before the timer, as the source hands them over): {lratios}
  (goal ≥ 0.95×), bare and runtime alternating batch by batch. Each path alone over a
  round instead (the bare forward back to back, with warmer caches):
  {cratios}. With nothing queued (each batch's monitors at once, as a daemon at a
  trickle, where the CPU is idle between samples anyway): **{ratio:.2f}×** one sample
  at a time, {bratios}; everything around the forward (the input check, the monitor
  set, the label intake, metrics, the results) then costs
  {100 * (1 / ratio - 1):.0f} % of the forward's time at batch 1.
- p99 during recalibration over p99 outside: **{p99_ratio:.2f}×** (goal ≤ 1.5×);
  {results_n} recalibrations ran back to back and ended in the
  {rec["phase_seconds"]:.1f} s phase
  ({rec["outcomes"]}, mean {rec["mean_seconds"] or 0:.2f} s each; a worst case: the
  recalibration thread never rests, and serving never idles, so each of a
  recalibration's in-process steps waits until it is due, `regulator.turns`).
- While labels are persisted: another thread handed the runtime labelled samples, 16
  per call (each call checked, fsynced once, matched): "paced", one label per
  {1 / LABEL_FRACTION:.1f} samples served, as the embedded default feeds back 30 % of
  labels ({report["labels_fed"]["paced"]} labels in the last paced round); "back to back",
  as fast as it can ({report["labels_fed"]["burst"]} in all), where the feeder's
  Python work (checks, encoding, matching) competes with serving for the GIL.
  Rounds with and without labels alternate.
- Candidates are built in the daemon's worker process (one torch thread, nice 5), so
  adaptation does not hold the serving process's GIL; on two cores it still shares the
  CPU with inference.
- `/metrics`: exposition {m["generate_p50"]:.2f} ms p50 / {m["generate_p99"]:.2f} ms p99 in-process,
  {m["http_p50"]:.2f} ms p50 / {m["http_p99"]:.2f} ms p99 over HTTP ({m["bytes"]} bytes).
"""
    (OUT / "daemon.md").write_text(md)
    print(md)


if __name__ == "__main__":
    sys.exit(main())
