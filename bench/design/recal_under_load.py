"""How long a recalibration takes while serving runs at a fixed rate: the cost of
serving first (``regulator.turns``), whose steps wait for serving's idle gaps.

Run: ``python bench/design/recal_under_load.py`` (prints a table; one run). A thread
calls ``Runtime.process`` at each rate while the main thread runs 3 supervised
recalibrations, their candidates built in the daemon's worker process.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from regulator.policy.model import parse_policy  # noqa: E402
from regulator.service.daemon import SWITCH_INTERVAL_S  # noqa: E402
from regulator.service.executor import ProcessExecutor  # noqa: E402
from regulator.service.runtime import Runtime  # noqa: E402
from regulator.tasks.base import make_family  # noqa: E402

RATES = (0, 250, 500, 900, None)  # samples/s; None: back to back (saturated)


def main() -> int:
    torch.set_num_threads(1)
    policy = parse_policy(
        {
            "device": {"id": "bench"},
            "model": {"prior": str(REPO / "models" / "nanosensor")},
            "rules": [],
            "source": {"kind": "http"},
            "recalibration": {"max_per_hour": 1000},
        }
    )
    rt = Runtime(policy, Path(tempfile.mkdtemp(prefix="recal-load-")) / "state")
    fam = make_family("nanosensor")
    x, _ = fam.sample(fam.nominal_environment(), 400, np.random.default_rng(0))
    rt.prime_detector_thresholds()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    executor = ProcessExecutor()
    executor.warm()
    rt.executor = executor
    n_cls = rt.serving.bundle.cfg.n_outputs
    drifted = fam.environment_from_seed(5)
    print("| serving load | samples served | recalibration seconds (3) | outcomes |")
    print("|---|---|---|---|")
    for rate in RATES:
        stop = threading.Event()
        served = [0]

        def serve(
            rate: int | None = rate, stop: threading.Event = stop, served: list[int] = served
        ) -> None:
            i, due = 0, time.perf_counter()
            while not stop.is_set():
                if rate:
                    due += 1.0 / rate
                    time.sleep(max(0.0, due - time.perf_counter()))
                rt.process(f"p{rate}-{i}", x[i % len(x)])
                served[0] += 1
                i += 1

        th = threading.Thread(target=serve, daemon=True) if rate != 0 else None
        if th is not None:
            th.start()
            time.sleep(0.2)
        seconds: list[float] = []
        outcomes: list[str] = []
        for j in range(3):
            xl, yl = fam.sample(drifted, 16 * n_cls, np.random.default_rng(100 + j))
            rt.add_labels([(f"l{rate}-{j}-{k}", int(yl[k]), xl[k]) for k in range(len(yl))])
            res = rt.recalibrate("http", "supervised")
            seconds.append(res.seconds)
            outcomes.append(res.outcome)
        stop.set()
        if th is not None:
            th.join()
        load = "none" if rate == 0 else "saturated" if rate is None else f"{rate} samples/s"
        print(
            f"| {load} | {served[0]} | "
            + ", ".join(f"{s:.2f}" for s in seconds)
            + f" | {', '.join(outcomes)} |"
        )
    executor.shutdown()
    rt.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
