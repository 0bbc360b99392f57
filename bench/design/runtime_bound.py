"""How close to the bare chip forward a runtime can come with the daemon's input shape:
the issue-11 goal (runtime at least 0.95x the bare forward at batch 1, 16 and 64)
against serving paths with pieces taken out.

Run: ``python bench/design/runtime_bound.py [--runs 3]`` (writes
bench/results/runtime_bound.md). As in bench/daemon.py, each variant is timed batch by
batch interleaved with ``ChipModel.predict`` on the same samples, in one process, one
torch thread, and is given what the runtime is given: a list of ``(id, x)`` items built
per batch (here outside the timing). The variants, each a bound, not a mode of the
daemon:

- ``runtime``: ``Runtime.process_batch`` as it ships;
- ``free monitors``: the same, with the monitor set's update and the label intake's
  input buffer replaced by storing one reference each (monitors that cost nothing);
- ``free monitors, columns``: also no per-sample result dicts: the check (stack, shape,
  finiteness), one forward, the metric counters, the two references, one object back;
- ``forward only``: the items stacked and checked, one forward, nothing else.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from regulator.meta.model import ChipModel  # noqa: E402
from regulator.policy.model import parse_policy  # noqa: E402
from regulator.service.daemon import SWITCH_INTERVAL_S  # noqa: E402
from regulator.service.runtime import Runtime  # noqa: E402
from regulator.tasks.base import make_family  # noqa: E402

VARIANTS = ("runtime", "free monitors", "free monitors, columns", "forward only")
BATCHES = (1, 16, 64)


def variant_fn(rt: Runtime, name: str) -> Any:
    """``fn(items)`` serving one batch the variant's way."""
    kept: deque[Any] = deque(maxlen=64)
    if name == "runtime":
        return rt.process_batch
    if name == "forward only":

        def forward_only(items: list[tuple[str, np.ndarray]]) -> Any:
            batch = np.asarray([x for _, x in items], dtype=np.float32)
            if not np.isfinite(batch).all():
                raise ValueError("not finite")
            return rt.serving.model.predict(batch)

        return forward_only
    # the free-monitor variants: the runtime's own objects, their updates made free
    monitors, intake = rt.monitors, rt.intake

    def free_update(served: Any, pred: Any, batch: Any, ids: Any, n0: int, t: float) -> Any:
        kept.append((pred, ids))
        return 0, None

    monitors.update = free_update  # type: ignore[method-assign]
    intake.served = lambda ids, arrs, t, first: kept.append((ids, arrs))  # type: ignore[method-assign]
    if name == "free monitors":
        return rt.process_batch
    m = rt.metrics

    def columns(items: list[tuple[str, np.ndarray]]) -> Any:
        served = rt.serving
        batch = np.asarray([x for _, x in items], dtype=np.float32)
        if batch.shape[1:] != (served.check.n_channels, served.check.length):
            raise ValueError("shape")
        if not np.isfinite(batch).all():
            raise ValueError("not finite")
        pred = served.model.predict(batch)
        n = len(batch)
        m.samples.inc(n)
        m.synaptic_ops.inc(pred.telemetry.synaptic_ops)
        m.energy.labels(phase="inference").inc(pred.energy_j)
        m.dense_ann_energy.inc(pred.dense_ann_j)
        ids = [sid for sid, _ in items]
        monitors.update(served, pred, batch, ids, 0, 0.0)
        intake.served(ids, batch, 0.0, 0)
        return (ids, pred, served.version)

    return columns


def one(name: str, n: int, tmp: Path) -> dict[int, float]:
    """bare / variant throughput at each batch size, one fresh runtime."""
    policy = parse_policy(
        {
            "device": {"id": "bench"},
            "model": {"prior": str(REPO / "models" / "nanosensor")},
            "rules": [],
            "source": {"kind": "http"},
        }
    )
    rt = Runtime(policy, tmp / "state")
    fam = make_family("nanosensor")
    x, _ = fam.sample(fam.nominal_environment(), n, np.random.default_rng(0))
    rt.prime_detector_thresholds()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    bare = ChipModel(rt.serving.bundle, seed=policy.device.seed)
    fn = variant_fn(rt, name)
    for i in range(20):
        bare.predict(x[i : i + 1])
        fn([(f"w{i}", x[i])])
    out = {}
    seq = 0
    for b in BATCHES:
        t_bare = t_var = 0.0
        for _ in range(3):
            for i in range(0, n - b + 1, b):
                items = [(f"s{seq}-{k}", x[i + k]) for k in range(b)]
                seq += 1
                t0 = time.perf_counter()
                bare.predict(x[i : i + b])
                t_bare += time.perf_counter() - t0
                t0 = time.perf_counter()
                fn(items)
                t_var += time.perf_counter() - t0
        out[b] = t_bare / t_var
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=640, help="samples per round")
    a = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="runtime-bound-"))
    res: dict[str, list[dict[int, float]]] = {v: [] for v in VARIANTS}
    for run in range(a.runs):
        for v in VARIANTS:
            r = one(v, a.n, tmp / f"{run}-{v.replace(' ', '_').replace(',', '')}")
            res[v].append(r)
            print(f"run {run + 1} {v}: " + ", ".join(f"b{b} {r[b]:.3f}" for b in BATCHES),
                  flush=True)  # fmt: skip
    lines = [
        "# Runtime over bare forward: what each serving path can reach",
        "",
        f"Command: `python bench/design/runtime_bound.py --runs {a.runs}`; torch "
        f"{torch.__version__}, one torch thread; {a.n} samples x 3 rounds per batch size.",
        "",
        "| serving path | batch 1 | batch 16 | batch 64 |",
        "|---|---|---|---|",
    ]
    for v, rs in res.items():
        cells = []
        for b in BATCHES:
            xs = [r[b] for r in rs]
            cells.append(f"{statistics.median(xs):.2f}x [{min(xs):.2f}, {max(xs):.2f}]")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines.append("")
    (REPO / "bench" / "results" / "runtime_bound.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
