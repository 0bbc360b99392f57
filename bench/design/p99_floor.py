"""What a recalibration running beside serving costs the serving thread's p99, piece by
piece: how far the issue-11 goal (p99 during back-to-back recalibrations at most 1.5x
the p99 outside) is from what each design can reach on this machine.

Run: ``python bench/design/p99_floor.py [--runs 3] [--rounds 3]`` (writes
bench/results/p99_floor.md). One process serves ``Runtime.process`` one sample at a
time, as bench/daemon.py does; "outside" is its p99 with nothing else running, "during"
its p99 while one of these runs back to back (a sample counts as "during" when the
activity was on for all of it):

- ``none``: a thread that wakes every 20 ms and sleeps again (the measurement's noise);
- ``pool-burn``: a ``concurrent.futures.ProcessPoolExecutor`` of one worker process
  (nice 5; the daemon's executor until 2026-12-03) runs a 15 ms CPU-bound job that
  touches nothing, waited for by a thread of the serving process;
- ``pipe-burn``: the same job on a plain worker process over a ``multiprocessing.Pipe``,
  sent and waited for by a thread (one wake-up a job, no pool threads: what the
  daemon's :class:`ProcessExecutor` does now);
- ``poll-burn``: the same worker and pipe, sent and polled (``Connection.poll``) by the
  serving thread itself between samples: no second thread wakes in the serving process;
- ``pool-candidate``: the pool runs the real ``build_candidate`` (one request captured
  from a recalibration), waited for by a thread;
- ``pipe-candidate``: the same request on the plain worker over a pipe, by a thread;
- ``full``: ``Runtime.recalibrate`` back to back, as in bench/daemon.py (labels read and
  split, the candidate built in the daemon's executor, stored, promoted, loaded,
  swapped).

A diagnostic of designs, not a mode of the daemon.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import multiprocessing.connection
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from regulator.policy.model import parse_policy  # noqa: E402
from regulator.service.candidate import CandidateRequest, build_candidate  # noqa: E402
from regulator.service.daemon import SWITCH_INTERVAL_S  # noqa: E402
from regulator.service.executor import ProcessExecutor, _worker_init  # noqa: E402
from regulator.service.runtime import Runtime  # noqa: E402
from regulator.tasks.base import make_family  # noqa: E402

MODES = (
    "none", "pool-burn", "pipe-burn", "poll-burn", "pool-candidate", "pipe-candidate", "full"
)  # fmt: skip
BURN_S = 0.015  # about what build_candidate takes for the nanosensor prior here


def burn(_req: Any = None) -> int:
    """A CPU-bound job of BURN_S seconds that touches nothing."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < BURN_S:
        pass
    return 1


def _pipe_worker(conn: multiprocessing.connection.Connection, parent: int) -> None:
    _worker_init(parent)
    while True:
        msg = conn.recv()
        if msg is None:
            return
        fn, arg = msg
        conn.send(fn(arg))


def p99_ms(xs: list[float]) -> float:
    return float(np.percentile(np.asarray(xs), 99)) * 1e3


def one(mode: str, rounds: int, tmp: Path) -> dict[str, Any]:
    policy = parse_policy(
        {
            "device": {"id": "bench"},
            "model": {"prior": str(REPO / "models" / "nanosensor")},
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
    fam = make_family("nanosensor")
    rng = np.random.default_rng(0)
    x, _ = fam.sample(fam.nominal_environment(), 400, rng)
    drifted = fam.sample_environment(rng)
    rt.prime_detector_thresholds()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    for i in range(20):
        rt.process(f"w{i}", x[i])
    n_cls = rt.serving.bundle.cfg.n_outputs
    label_sets = [
        fam.sample(drifted, 16 * n_cls, np.random.default_rng(100 + j)) for j in range(40)
    ]
    runner = ProcessExecutor()
    runner.warm()
    rt.executor = runner
    pool = None
    if mode.startswith("pool-"):
        pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(os.getpid(),),
        )
        pool.submit(burn, None).result()  # started
    captured: list[CandidateRequest] = []
    if mode.endswith("-candidate"):  # one real request, captured from a recalibration
        real_run = runner.run

        def capture(fn: Any, req: CandidateRequest, timeout_s: float) -> Any:
            captured.append(req)
            return real_run(fn, req, timeout_s=timeout_s)

        runner.run = capture  # type: ignore[method-assign]
        xl, yl = label_sets[0]
        rt.add_labels([(f"c{k}", int(yl[k]), xl[k]) for k in range(len(yl))])
        rt.recalibrate("http", "supervised")
        runner.run = real_run  # type: ignore[method-assign]
    conn = None
    if mode in ("pipe-burn", "poll-burn", "pipe-candidate"):
        ctx = multiprocessing.get_context("spawn")
        conn, child = ctx.Pipe()
        ctx.Process(target=_pipe_worker, args=(child, os.getpid()), daemon=True).start()
        conn.send((burn, None))
        conn.recv()

    outside: list[float] = []
    for r in range(rounds):
        for i in range(len(x)):
            t0 = time.perf_counter()
            rt.process(f"o{r}-{i}", x[i])
            outside.append(time.perf_counter() - t0)

    on = threading.Event()
    stop = threading.Event()
    jobs = [0]

    def activity() -> None:
        torch.set_num_threads(1)
        j = 0
        while not stop.is_set():
            on.set()
            if mode == "none":
                time.sleep(0.02)
            elif mode == "pool-burn":
                assert pool is not None
                pool.submit(burn, None).result(timeout=60)
            elif mode == "pipe-burn":
                assert conn is not None
                conn.send((burn, None))
                conn.recv()
            elif mode == "pool-candidate":
                assert pool is not None
                pool.submit(build_candidate, captured[0]).result(timeout=60)
            elif mode == "pipe-candidate":
                assert conn is not None
                conn.send((build_candidate, captured[0]))
                conn.recv()
            else:  # full
                on.clear()  # the labels are handed over between jobs, as in bench/daemon.py
                xl, yl = label_sets[j % len(label_sets)]
                rt.add_labels([(f"l{j}-{k}", int(yl[k]), xl[k]) for k in range(len(yl))])
                on.set()
                rt.recalibrate("http", "supervised")
            on.clear()
            j += 1
            jobs[0] += 1

    th = None
    if mode == "poll-burn":
        assert conn is not None
        conn.send((burn, None))
        on.set()
    else:
        th = threading.Thread(target=activity, daemon=True)
        th.start()
        time.sleep(0.2)
    during: list[float] = []
    for r in range(rounds):
        for i in range(len(x)):
            before = on.is_set()
            t0 = time.perf_counter()
            rt.process(f"d{r}-{i}", x[i])
            dt = time.perf_counter() - t0
            if before and on.is_set():
                during.append(dt)
            if conn is not None and mode == "poll-burn" and conn.poll():
                conn.recv()  # between samples, on the serving thread: the next job
                conn.send((burn, None))
                jobs[0] += 1
    stop.set()
    if th is not None:
        th.join()
    if conn is not None:
        if mode == "poll-burn":
            conn.recv()
        conn.send(None)
    runner.shutdown()
    if pool is not None:
        pool.shutdown()
    return {
        "outside_p99_ms": p99_ms(outside),
        "during_p99_ms": p99_ms(during),
        "ratio": p99_ms(during) / p99_ms(outside),
        "n_during": len(during),
        "jobs": jobs[0],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    a = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="p99-floor-"))
    res: dict[str, list[dict[str, Any]]] = {m: [] for m in a.modes}
    for run in range(a.runs):  # modes interleaved run by run: the same machine state
        for m in a.modes:
            r = one(m, a.rounds, tmp / f"{m}-{run}")
            res[m].append(r)
            print(f"run {run + 1} {m}: ratio {r['ratio']:.2f} (p99 {r['outside_p99_ms']:.3f} -> "
                  f"{r['during_p99_ms']:.3f} ms, {r['jobs']} jobs)", flush=True)  # fmt: skip
    lines = [
        "# p99 of serving beside a recalibration: what each design can reach",
        "",
        f"Command: `python bench/design/p99_floor.py --runs {a.runs} --rounds {a.rounds}`;"
        f" {os.cpu_count()} CPUs, torch {torch.__version__}, one torch thread; "
        f"{a.rounds} x 400 samples outside and during, per run.",
        "",
        "| activity beside serving | p99 during / outside, median [min, max] | "
        "p99 outside ms (median) | jobs per run (median) |",
        "|---|---|---|---|",
    ]
    for m, rs in res.items():
        ratios = [r["ratio"] for r in rs]
        lines.append(
            f"| `{m}` | {statistics.median(ratios):.2f}x [{min(ratios):.2f}, {max(ratios):.2f}] | "
            f"{statistics.median(r['outside_p99_ms'] for r in rs):.3f} | "
            f"{statistics.median(r['jobs'] for r in rs):.0f} |"
        )
    lines.append("")
    out = REPO / "bench" / "results" / "p99_floor.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
