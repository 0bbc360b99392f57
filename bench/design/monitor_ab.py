"""Where the runtime's time goes at batch 64: an A/B of serving variants in one process.

Run: ``python bench/design/monitor_ab.py [--seed S] [--rounds 30]`` (session 9 of issue 11;
the figures are in ``bench/results/daemon.md``). A design experiment: it patches the
service's internals, so it is not a benchmark of the shipped code beyond ``base``.

The loaded path of ``bench/daemon.py`` (``Runtime.process_batch(defer=True)`` on 400
samples a round, the bare forward alternating batch by batch, the round's end flushed and
timed), with the variant switched round by round **in a random order** (``--seed``): in a
fixed order each variant ran after the same neighbour, and a variant's figure moved by up
to 60 us a forward with its place in the order. Variants:

- ``base``: the shipped code;
- ``no_monitors``: the deferred block's work dropped (no OOD score, p-value, detector,
  EWMAs, energy, density, accuracy, window or metrics): what serving costs with every
  monitor elsewhere;
- ``no_check``: the input check replaced by stacking alone;
- ``ring``: served inputs copied into one preallocated ring before the label intake keeps
  them (instead of keeping each batch's own array);
- ``fused_ood`` (needs ``numba``, not a dependency): the OOD monitor's score after its
  matrix product, conformal rank, tail p-value and three EWMAs in one compiled loop, the
  scores bit for bit as the shipped scorer's (numpy's pairwise row sum replicated);
- ``fused_ood_no_detector``: the same without the change detector;
- ``fused_ood_no_others``: ``fused_ood`` without energy, density, accuracy and window;
- ``thread`` (only with ``--alone``): every served batch's monitor work handed to one
  worker thread in the same process (it takes whatever is queued as one block), the
  round's end waiting for it: the monitors on the other core, under the one GIL.

``--alone`` times each path over a whole round instead of alternating batch by batch
(harsher, and needed for ``thread``: alternating, its worker would run during the bare
forward and slow that instead).

Prints, per variant, the median over rounds of runtime minus bare (us a forward) and of
bare / runtime (the ratio the issue's goal is stated in).
"""

from __future__ import annotations

import argparse
import collections
import gc
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from regulator.meta.model import ChipModel  # noqa: E402
from regulator.monitor.accuracy import AccuracyMonitor  # noqa: E402
from regulator.monitor.density import SpikeDensityMonitor  # noqa: E402
from regulator.monitor.stream import OODMonitor  # noqa: E402
from regulator.policy.model import parse_policy  # noqa: E402
from regulator.service import inference, inputs, intake, monitors  # noqa: E402
from regulator.service.daemon import SWITCH_INTERVAL_S  # noqa: E402
from regulator.service.drift import DriftWindow  # noqa: E402
from regulator.service.runtime import Runtime  # noqa: E402
from regulator.service.threads import pin_threads  # noqa: E402
from regulator.tasks.base import make_family  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODE = ["base"]


def fused_update() -> Any:
    """``OODMonitor.update`` with its arithmetic after the matrix product compiled."""
    import numba

    @numba.njit(cache=False)
    def row_sum(v: np.ndarray) -> float:  # numpy's pairwise sum of a short contiguous row
        n = v.size
        if n < 8:
            r = 0.0
            for i in range(n):
                r += v[i]
            return r
        r0, r1, r2, r3, r4, r5, r6, r7 = v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]
        i = 8
        while i < n - (n % 8):
            r0 += v[i]
            r1 += v[i + 1]
            r2 += v[i + 2]
            r3 += v[i + 3]
            r4 += v[i + 4]
            r5 += v[i + 5]
            r6 += v[i + 6]
            r7 += v[i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += v[i]
            i += 1
        return res

    @numba.njit(cache=False)
    def kernel(x, xp, srt, beta, out_s, out_p, out_t, ew, a):  # type: ignore[no-untyped-def]
        n, h = x.shape
        m = srt.size
        top = srt[m - 1]
        row = np.empty(h)
        es, ep, et = ew[0], ew[1], ew[2]
        for i in range(n):
            for j in range(h):
                row[j] = xp[i, j] * x[i, j]
            s = row_sum(row)
            out_s[i] = s
            lo, hi = 0, m
            while lo < hi:  # searchsorted, side="left"
                mid = (lo + hi) >> 1
                if srt[mid] < s:
                    lo = mid + 1
                else:
                    hi = mid
            p = ((m + 1) - lo) / (m + 1.0)
            out_p[i] = p
            t = np.exp(-(s - top) / beta) / (m + 1.0) if beta > 0 and s > top else p
            out_t[i] = t
            es = (1.0 - a) * es + a * s
            ep = (1.0 - a) * ep + a * p
            et = (1.0 - a) * et + a * t
        ew[0], ew[1], ew[2] = es, ep, et

    def update(self: OODMonitor, hidden: np.ndarray, readout: Any = None) -> None:
        sc, cal = self.calibrated.scorer, self.calibrated.calibrator
        x = np.subtract(hidden, sc._mean, dtype=np.float64)
        xp = x @ sc._precision
        n = len(x)
        s, p, t = np.empty(n), np.empty(n), np.empty(n)
        ew = np.array([self._ewma_score or 0.0, self._ewma_p or 0.0, self._ewma_p_tail or 0.0])
        kernel(x, xp, cal._sorted, cal._tail_beta(), s, p, t, ew, self._alpha)
        if MODE[0] != "fused_ood_no_detector":
            self._detector.update(p)
        self._scores, self._p, self._p_tail = s, p, t
        self._ewma_score, self._ewma_p, self._ewma_p_tail = (float(v) for v in ew)
        self._n += n

    return update


def patch(ring: np.ndarray) -> list[str]:
    """Switch the variants by ``MODE``; returns the variants available."""
    o_flush, o_then, o_batch, o_served = (
        inference.Inference._flush,
        inference.Inference._then,
        inputs.InputCheck.batch,
        intake.Intake.served,
    )
    o_ood = OODMonitor.update
    pos = [0]

    queued: collections.deque[list[Any]] = collections.deque()
    cv = threading.Condition()
    busy = [False]

    def worker() -> None:  # the ``thread`` variant's: one block of whatever is queued
        while True:
            with cv:
                while not queued:
                    cv.wait()
                block = [b for part in queued for b in part]
                queued.clear()
                busy[0] = True
            rt_inf = block[0][2]
            rt_inf._pending, rt_inf._pending_n = [(b, r) for b, r, _ in block], 0
            o_flush(rt_inf)
            with cv:
                busy[0] = False
                cv.notify_all()

    threading.Thread(target=worker, daemon=True).start()

    def hand_over(self: Any) -> None:
        pending, self._pending, self._pending_n = self._pending, [], 0
        with cv:
            queued.append([(b, r, self) for b, r in pending])
            cv.notify_all()

    def then(self: Any, rows: Any, defer: bool) -> Any:
        if MODE[0] == "thread":
            hand_over(self)
            return rows
        return o_then(self, rows, defer)

    def flush(self: Any) -> None:
        if MODE[0] == "no_monitors":
            self._pending, self._pending_n = [], 0
            return
        if MODE[0] == "thread":
            if self._pending:
                hand_over(self)
            with cv:
                while queued or busy[0]:
                    cv.wait()
            return
        o_flush(self)

    def batch(self: Any, xs: Any) -> Any:
        return np.asarray(xs, dtype=np.float32) if MODE[0] == "no_check" else o_batch(self, xs)

    def served(self: Any, ids: Any, b: np.ndarray, t_s: float, first: int) -> None:
        if MODE[0] == "ring":
            p, n = pos[0], len(b)
            p = 0 if p + n > len(ring) else p
            ring[p : p + n] = b
            pos[0], b = p + n, ring[p : p + n]
        o_served(self, ids, b, t_s, first)

    inference.Inference._flush = flush
    inference.Inference._then = then
    inputs.InputCheck.batch = batch
    intake.Intake.served = served
    variants = ["base", "no_monitors", "no_check", "ring", "thread"]
    try:
        fused = fused_update()
    except ImportError:
        print("numba is not installed: the fused_ood variants are left out")
        return variants

    def ood(self: OODMonitor, h: Any, r: Any = None) -> None:
        (fused if MODE[0].startswith("fused_ood") else o_ood)(self, h, r)

    def skip(o: Any) -> Any:
        def f(self: Any, *a: Any, **k: Any) -> Any:
            return None if MODE[0] == "fused_ood_no_others" else o(self, *a, **k)

        return f

    OODMonitor.update = ood
    for cls, name in (
        (SpikeDensityMonitor, "update"),
        (DriftWindow, "add"),
        (AccuracyMonitor, "record"),
        (monitors.MonitorSet, "report_energy"),
    ):
        setattr(cls, name, skip(getattr(cls, name)))
    return [*variants, "fused_ood", "fused_ood_no_detector", "fused_ood_no_others"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1, help="the variants' order, round by round")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--n", type=int, default=400, help="samples a round")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--alone", action="store_true", help="each path alone over a round")
    a = ap.parse_args()
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
    rt = Runtime(policy, Path(tempfile.mkdtemp(prefix="monitor-ab-")) / "state")
    fam = make_family("nanosensor")
    x, _ = fam.sample(fam.nominal_environment(), a.n, np.random.default_rng(0))
    variants = patch(np.zeros((8192, *x.shape[1:]), np.float32))
    if not a.alone:
        variants.remove("thread")
    rt.prime_detector_thresholds()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    bare = ChipModel(rt.serving.bundle, seed=policy.device.seed)
    for v in variants:  # warm-up (and compile) every variant
        MODE[0] = v
        for i in range(5):
            bare.predict(x[i : i + 1])
            rt.process(f"w-{v}-{i}", x[i])
    rt.flush()
    over: dict[str, list[float]] = {v: [] for v in variants}
    ratio: dict[str, list[float]] = {v: [] for v in variants}
    order = np.random.default_rng(a.seed)
    starts = range(0, a.n - a.batch + 1, a.batch)
    for rnd in range(a.rounds):
        for v in order.permutation(variants):
            MODE[0] = str(v)
            items = [[(f"{rnd}-{v}-{i}-{k}", x[i + k]) for k in range(a.batch)] for i in starts]
            t_bare = t_rt = 0.0
            if a.alone:
                t0 = time.perf_counter()
                for i in starts:
                    bare.predict(x[i : i + a.batch])
                t_bare = time.perf_counter() - t0
                t0 = time.perf_counter()
                for it in items:
                    rt.process_batch(it, defer=True)
                rt.flush()
                t_rt = time.perf_counter() - t0
            else:
                for i, it in zip(starts, items, strict=True):
                    t0 = time.perf_counter()
                    bare.predict(x[i : i + a.batch])
                    t_bare += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    rt.process_batch(it, defer=True)
                    t_rt += time.perf_counter() - t0
                t0 = time.perf_counter()
                rt.flush()
                t_rt += time.perf_counter() - t0
            over[str(v)].append((t_rt - t_bare) / len(starts))
            ratio[str(v)].append(t_bare / t_rt)
    how = "each path alone over a round" if a.alone else "alternating batch by batch"
    print(f"batch {a.batch}, {a.rounds} rounds x {a.n} samples, order seed {a.seed}, {how}")
    for v in variants:
        print(
            f"{v:24s} runtime - bare {np.median(over[v]) * 1e6:6.1f} us a forward,"
            f" bare / runtime {np.median(ratio[v]):.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
