"""Would the OOD monitor in a process of its own meet the batch-64 goal? A prototype.

Run: ``python bench/design/monitor_process.py [--seed S] [--rounds 30]`` (session 10 of
issue 11; the figures are in ``bench/results/daemon.md``). A design experiment that
patches the service's internals; only ``base`` is the shipped code.

The loaded path of ``bench/daemon.py`` at batch 64 (``Runtime.process_batch(defer=True)``
on 400 samples a round, the round's end flushed), each path timed alone over a round, the
variant switched round by round in a random order. Variants:

- ``base``: the shipped code;
- ``no_monitors``: the deferred monitor block dropped (the bound);
- ``process``: each forward's hidden counts and readout copied into a shared-memory ring
  as it is served; a second process, spinning on the ring's counter, runs the served
  model's OOD monitor (score, conformal rank, tail, EWMAs, CUSUM) on them and writes the
  p-values back; the block update on the serving thread waits for it (spinning; with
  ``--block`` both sides wait on an eventfd instead, one write a forward) and
  takes the p-values instead of computing them. The rest of the monitor block (energy,
  density, accuracy, window, episodes) stays on the serving thread. A timing prototype:
  the replica's alarms are not fed back to the episodes;
- ``process_only``: ``process`` with the rest of the block dropped too: what offloading
  every monitor would leave on the serving thread.

Prints, per variant, the median over rounds of runtime minus bare (us a forward) and of
bare / runtime.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import sys
import tempfile
import time
import warnings
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from regulator.meta.model import ChipModel  # noqa: E402
from regulator.monitor.stream import OODMonitor  # noqa: E402
from regulator.policy.model import parse_policy  # noqa: E402
from regulator.service import inference, monitors  # noqa: E402
from regulator.service.daemon import SWITCH_INTERVAL_S  # noqa: E402
from regulator.service.runtime import Runtime  # noqa: E402
from regulator.service.threads import pin_threads  # noqa: E402
from regulator.tasks.base import make_family  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODE = ["base"]
WAKE: list[int] = []  # --block: eventfds (to the replica, back from it) instead of spinning
RING = 65536  # samples: the prototype never wraps


class Ring:
    """Hidden counts ``[RING, H]`` and readout ``[RING, K]`` in, p-values ``[RING]`` out;
    ``ctl[0]`` samples written, ``ctl[1]`` samples done, ``ctl[2]`` 1 to stop."""

    def __init__(self, h: int, k: int, name: str | None = None) -> None:
        size = RING * (h + k) * 4 + RING * 8 + 3 * 8
        self.shm = shared_memory.SharedMemory(name=name, create=name is None, size=size)
        buf, at = self.shm.buf, 0
        self.ctl = np.ndarray((3,), np.int64, buf, at)
        at += 24
        self.p = np.ndarray((RING,), np.float64, buf, at)
        at += RING * 8
        self.hidden = np.ndarray((RING, h), np.float32, buf, at)
        at += RING * h * 4
        self.readout = np.ndarray((RING, k), np.float32, buf, at)


def replica(name: str, h: int, k: int, config: dict[str, Any], state: dict[str, Any]) -> None:
    """The second process: the served OOD monitor's replica, spinning on the ring."""
    pin_threads()
    ring = Ring(h, k, name)
    ood = OODMonitor(
        config["model"], config["detector"], config["detector_config"], config["alpha"]
    )
    ood.load_state_dict(state)
    done = 0
    while not ring.ctl[2]:
        written = int(ring.ctl[0])
        if written == done:
            if WAKE:
                os.eventfd_read(WAKE[0])  # blocks until the serving thread wrote more
            continue  # else spin: the serving thread waits for this process at every flush
        lo, hi = done, written
        ood.update(ring.hidden[lo:hi], ring.readout[lo:hi])
        ring.p[lo:hi] = ood.p_value_array
        done = written
        ring.ctl[1] = done
        if WAKE:
            os.eventfd_write(WAKE[1], 1)
    ring.shm.close()


def patch(ring: Ring) -> None:
    o_forward, o_flush = inference.Inference._forward, inference.Inference._flush
    o_update, o_set = OODMonitor.update, monitors.MonitorSet._update
    sent = [0]

    def forward(self: Any, *a: Any) -> Any:
        rows = o_forward(self, *a)
        if MODE[0].startswith("process") and self._pending:
            pred = self._pending[-1][0].pred
            n, at = len(pred.hidden_counts), sent[0]
            if at + n > RING:
                raise RuntimeError("the prototype's ring is full: fewer rounds")
            ring.hidden[at : at + n] = pred.hidden_counts
            ring.readout[at : at + n] = pred.outputs
            sent[0] += n
            ring.ctl[0] = sent[0]
            if WAKE:
                os.eventfd_write(WAKE[0], 1)
        return rows

    def update(self: OODMonitor, hidden: Any, readout: Any = None) -> None:
        if not MODE[0].startswith("process"):
            return o_update(self, hidden, readout)
        while ring.ctl[1] != sent[0]:
            if WAKE:
                os.eventfd_read(WAKE[1])
        n = len(hidden)
        self._p = ring.p[sent[0] - n : sent[0]].copy()
        self._n += n
        return None

    def block(self: Any, blk: Any, current: Any) -> Any:
        if MODE[0] == "process_only":
            served = blk[0].served
            n = sum(len(b.ids) for b in blk)
            served.ood.update(np.empty((n, 0)), None)
            return monitors.BlockOutcome(0, [], served.ood.p_value_array)
        return o_set(self, blk, current)

    def flush(self: Any) -> None:
        if MODE[0] == "no_monitors":
            self._pending, self._pending_n = [], 0
            return
        o_flush(self)

    inference.Inference._forward = forward
    inference.Inference._flush = flush
    OODMonitor.update = update
    monitors.MonitorSet._update = block


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1, help="the variants' order, round by round")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--n", type=int, default=400, help="samples a round")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--block", action="store_true", help="eventfd wake-ups, no spinning")
    a = ap.parse_args()
    if a.block:
        WAKE[:] = [os.eventfd(0), os.eventfd(0)]
    pin_threads()
    torch.set_num_threads(1)
    policy = parse_policy(
        {
            "device": {"id": "ab"},
            "model": {"prior": str(REPO / "models" / "nanosensor")},
            "rules": [],
            "source": {"kind": "http"},
        }
    )
    rt = Runtime(policy, Path(tempfile.mkdtemp(prefix="monitor-process-")) / "state")
    fam = make_family("nanosensor")
    x, _ = fam.sample(fam.nominal_environment(), a.n, np.random.default_rng(0))
    rt.prime_detector_thresholds()
    ood = rt.serving.ood
    pred = rt.serving.model.predict(x[:2], checked=True)
    h, k = pred.hidden_counts.shape[1], pred.outputs.shape[1]
    ring = Ring(h, k)
    ring.ctl[:] = 0
    child = mp.get_context("fork").Process(
        target=replica, args=(ring.shm.name, h, k, ood.config, ood.state_dict()), daemon=True
    )
    child.start()
    patch(ring)
    variants = ["base", "no_monitors", "process", "process_only"]
    bare = ChipModel(rt.serving.bundle, seed=policy.device.seed)
    for v in variants:  # warm-up
        MODE[0] = v
        for i in range(5):
            bare.predict(x[i : i + 1])
            rt.process(f"w-{v}-{i}", x[i])
        rt.flush()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    over: dict[str, list[float]] = {v: [] for v in variants}
    ratio: dict[str, list[float]] = {v: [] for v in variants}
    order = np.random.default_rng(a.seed)
    starts = range(0, a.n - a.batch + 1, a.batch)
    try:
        for rnd in range(a.rounds):
            for v in order.permutation(variants):
                MODE[0] = str(v)
                items = [[(f"{rnd}-{v}-{i}-{j}", x[i + j]) for j in range(a.batch)] for i in starts]
                t0 = time.perf_counter()
                for i in starts:
                    bare.predict(x[i : i + a.batch])
                t_bare = time.perf_counter() - t0
                t0 = time.perf_counter()
                for it in items:
                    rt.process_batch(it, defer=True)
                rt.flush()
                t_rt = time.perf_counter() - t0
                over[str(v)].append((t_rt - t_bare) / len(starts))
                ratio[str(v)].append(t_bare / t_rt)
    finally:
        ring.ctl[2] = 1
        if WAKE:
            os.eventfd_write(WAKE[0], 1)
        child.join(5)
        ring.shm.close()
        ring.shm.unlink()
    how = "eventfd wake-ups" if a.block else "the replica spinning"
    print(f"batch {a.batch}, {a.rounds} rounds x {a.n} samples, seed {a.seed}, alone, {how}")
    for v in variants:
        print(
            f"{v:14s} runtime - bare {np.median(over[v]) * 1e6:6.1f} us a forward,"
            f" bare / runtime {np.median(ratio[v]):.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
