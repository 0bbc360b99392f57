"""How long each piece of a recalibration holds its turn (regulator.turns) while samples
are served back to back: the pieces a sample can wait for.

Run: ``python bench/design/turn_pieces.py [--seconds 12]`` (prints; a diagnostic, no
record file). One runtime as in bench/daemon.py (shipped nanosensor prior, the process
executor, labels of a drifted environment added before each recalibration); the serving
thread calls ``Runtime.process`` back to back while another thread recalibrates back to
back. Every step's turn is timed from take to give and grouped by where it began and
ended (the yield points), with the p99 during recalibrations over the p99 outside.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections import defaultdict
from pathlib import Path

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from regulator import turns as turns_mod  # noqa: E402
from regulator.policy.model import parse_policy  # noqa: E402
from regulator.service.daemon import SWITCH_INTERVAL_S  # noqa: E402
from regulator.service.executor import ProcessExecutor  # noqa: E402
from regulator.service.runtime import Runtime  # noqa: E402
from regulator.tasks.base import make_family  # noqa: E402

held: dict[tuple[str, str], list[float]] = defaultdict(list)


def _where() -> str:
    st = traceback.extract_stack(limit=7)[:-3]
    return " < ".join(f"{f.name}:{f.lineno}" for f in reversed(st[-3:]))


def instrument() -> None:
    """Time every step's turn (wraps the private take/give of this process's Turns)."""
    take, give = turns_mod.Turns._take, turns_mod.Turns._give
    starts: dict[int, tuple[float, str]] = {}

    def timed_take(self: turns_mod.Turns, who: str) -> None:
        take(self, who)  # type: ignore[arg-type]
        if who == "step":
            starts[id(self)] = (time.perf_counter(), _where())

    def timed_give(self: turns_mod.Turns) -> None:
        start = starts.pop(id(self), None)
        if start is not None:
            held[(start[1], _where())].append(time.perf_counter() - start[0])
        give(self)

    turns_mod.Turns._take = timed_take  # type: ignore[method-assign]
    turns_mod.Turns._give = timed_give  # type: ignore[method-assign]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=12.0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    instrument()
    policy = parse_policy(
        {
            "device": {"id": "bench"},
            "model": {"prior": str(REPO / "models" / "nanosensor")},
            "rules": [],
            "source": {"kind": "http"},
            "recalibration": {"k_shot": 5, "holdout_per_class": 3, "max_per_hour": 3600,
                              "allow_label_free_fallback": False},
        }
    )  # fmt: skip
    rt = Runtime(policy, Path(tempfile.mkdtemp(prefix="turn-pieces-")) / "state")
    fam = make_family("nanosensor")
    rng = np.random.default_rng(0)
    x, _ = fam.sample(fam.nominal_environment(), 400, rng)
    drifted = fam.sample_environment(rng)
    rt.prime_detector_thresholds()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    n_cls = rt.serving.bundle.cfg.n_outputs
    label_sets = [
        fam.sample(drifted, 16 * n_cls, np.random.default_rng(100 + j)) for j in range(40)
    ]
    outside = []
    for i in range(1200):
        t0 = time.perf_counter()
        rt.process(f"o{i}", x[i % 400])
        outside.append(time.perf_counter() - t0)
    runner = ProcessExecutor()
    runner.warm()
    rt.executor = runner
    held.clear()
    stop, in_recal = threading.Event(), threading.Event()

    def recalibrate() -> None:
        torch.set_num_threads(1)
        j = 0
        while not stop.is_set():
            xl, yl = label_sets[j % len(label_sets)]
            rt.add_labels([(f"l{j}-{k}", int(yl[k]), xl[k]) for k in range(len(yl))])
            in_recal.set()
            rt.recalibrate("http", "supervised")
            in_recal.clear()
            j += 1

    th = threading.Thread(target=recalibrate, daemon=True)
    th.start()
    during = []
    s = 0
    t_end = time.monotonic() + a.seconds
    while time.monotonic() < t_end:
        before = in_recal.is_set()
        t0 = time.perf_counter()
        rt.process(f"d{s}", x[s % 400])
        dt = time.perf_counter() - t0
        if before and in_recal.is_set():
            during.append(dt)
        s += 1
    stop.set()
    th.join()
    runner.shutdown()
    n_recal = len(rt.results)
    rt.close()
    p99_in, p99_out = np.percentile(during, 99) * 1e3, np.percentile(outside, 99) * 1e3
    p50_in = np.percentile(during, 50) * 1e3
    print(f"p99 during {p99_in:.2f} ms / outside {p99_out:.2f} ms = {p99_in / p99_out:.2f}x; "
          f"p50 during {p50_in:.2f} ms; {n_recal} recalibrations")  # fmt: skip
    print("turns held by a recalibration's steps (ms), largest first:")
    for (start, end), v in sorted(held.items(), key=lambda kv: -float(np.median(kv[1])))[:15]:
        q = np.percentile(v, [50, 90, 100]) * 1e3
        print(f"  n={len(v):5d} p50 {q[0]:.2f} p90 {q[1]:.2f} max {q[2]:.2f}  {start}  ->  {end}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
