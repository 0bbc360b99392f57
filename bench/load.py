"""Concurrent HTTP load on a real daemon while samples stream: does serving keep up?

Run: ``python bench/load.py [--clients 8] [--seconds 15] [--runs 3]`` (writes
bench/results/load.json and load.md). Loopback only; every client stops by itself.

One ``regulator run`` with ``source: http`` and the shipped nanosensor prior. A pusher
streams samples to ``POST /v1/samples`` (one sample a request, as a sensor would):

- ``paced``: at a fixed 100 samples/s;
- ``flat-out``: back to back, as fast as it is answered (the daemon is then CPU-bound).

Each run measures the samples served per second (``regulator_samples_total``) with the
pusher alone (idle), then with ``--clients`` threads looping over ``GET /metrics``,
``GET /v1/status`` and ``POST /v1/samples`` (requests/s, p50/p99 per route); the
figure is served/s under load over idle, median and range over the runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.service.conftest import TOKEN, DaemonProcess, policy_dict, write_policy  # noqa: E402
from tests.service.faults import nanosensor  # noqa: E402

OUT = Path(__file__).parent / "results"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _push(
    url: str, x: np.ndarray, rate_hz: float | None, stop: Any, sent: Any, refused: Any
) -> None:
    """The sensor: its own process, so the clients' threads do not slow its pushes."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as c:
        i = 0
        t_next = time.monotonic()
        while not stop.is_set():
            r = c.post("/v1/samples", json={"samples": [{"x": x[i % len(x)].tolist()}]})
            with sent.get_lock():
                sent.value += 1
            if r.status_code != 200 or r.json().get("rejected"):
                with refused.get_lock():
                    refused.value += 1
            i += 1
            if rate_hz:
                t_next += 1.0 / rate_hz
                time.sleep(max(0.0, t_next - time.monotonic()))


class Pusher:
    def __init__(self, url: str, x: np.ndarray, rate_hz: float | None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop = ctx.Event()
        self.sent = ctx.Value("q", 0)
        self.refused_v = ctx.Value("q", 0)
        self.proc = ctx.Process(
            target=_push, args=(url, x, rate_hz, self.stop, self.sent, self.refused_v),
            daemon=True,
        )  # fmt: skip

    def start(self) -> None:
        self.proc.start()

    def join(self, timeout: float) -> None:
        self.proc.join(timeout)

    @property
    def refused(self) -> int:
        return int(self.refused_v.value)


def _served_rate(d: DaemonProcess, seconds: float, pusher: Pusher) -> tuple[float, float]:
    """(served, offered) samples per second over ``seconds``."""
    n0, s0, t0 = d.metric("regulator_samples_total"), pusher.sent.value, time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    return (d.metric("regulator_samples_total") - n0) / dt, (pusher.sent.value - s0) / dt


def _clients(url: str, x: np.ndarray, n: int, seconds: float) -> dict[str, Any]:
    lat: dict[str, list[float]] = defaultdict(list)
    errors = [0]
    deadline = time.monotonic() + seconds
    lock = threading.Lock()

    def loop() -> None:
        with httpx.Client(base_url=url, headers=AUTH, timeout=30) as c:
            k = 0
            while time.monotonic() < deadline:
                route = ("/metrics", "/v1/status", "/v1/samples")[k % 3]
                t0 = time.perf_counter()
                if route == "/v1/samples":
                    r = c.post(route, json={"samples": [{"x": x[k % len(x)].tolist()}]})
                else:
                    r = c.get(route)
                dt = time.perf_counter() - t0
                with lock:
                    lat[route].append(dt)
                    errors[0] += r.status_code >= 400
                k += 1

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    wall = time.monotonic() - t0
    total = sum(len(v) for v in lat.values())
    return {
        "requests_per_s": total / wall,
        "errors": errors[0],
        "routes": {
            r: {"n": len(v), "p50_ms": 1e3 * float(np.percentile(v, 50)),
                "p99_ms": 1e3 * float(np.percentile(v, 99))}
            for r, v in sorted(lat.items())
        },
    }  # fmt: skip


def one_run(d: DaemonProcess, x: np.ndarray, mode: str, a: argparse.Namespace) -> dict[str, Any]:
    pusher = Pusher(d.url, x, 100.0 if mode == "paced" else None)
    pusher.start()
    try:
        time.sleep(4)  # settle (the pusher process starts)
        idle, idle_offered = _served_rate(d, a.seconds, pusher)
        out: dict[str, Any] = {}
        t = threading.Thread(target=lambda: out.update(_clients(d.url, x, a.clients, a.seconds)))
        t.start()
        time.sleep(1)  # clients ramp up
        loaded, loaded_offered = _served_rate(d, a.seconds - 2, pusher)
        t.join()
    finally:
        pusher.stop.set()
        pusher.join(30)
    return {"idle_samples_per_s": idle, "loaded_samples_per_s": loaded,
            "idle_offered_per_s": idle_offered, "loaded_offered_per_s": loaded_offered,
            "ratio": loaded / idle if idle else float("nan"), "pusher_refused": pusher.refused,
            **out}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prior", type=Path, default=REPO / "models" / "nanosensor")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="load-"))
    policy = policy_dict(a.prior, source={"kind": "http", "queue_size": 4096})
    cfg = write_policy(root / "policy.yaml", policy)
    x, _ = nanosensor(200)
    d = DaemonProcess(cfg, root / "state", root / "daemon.log").start()
    runs: dict[str, list[dict[str, Any]]] = {"paced": [], "flat-out": []}
    try:
        d.wait_ready(180)
        for i in range(a.runs):
            for mode in runs:
                r = one_run(d, x, mode, a)
                runs[mode].append(r)
                print(
                    f"run {i + 1} {mode}: idle {r['idle_samples_per_s']:.1f}/s, loaded "
                    f"{r['loaded_samples_per_s']:.1f}/s, ratio {r['ratio']:.2f}, "
                    f"{r['requests_per_s']:.0f} req/s, errors {r['errors']}",
                    flush=True,
                )
        server_errors = d.metric("regulator_http_server_errors_total")
    finally:
        d.close()
    summary = {}
    for mode, rs in runs.items():
        ratios = [r["ratio"] for r in rs]
        summary[mode] = {
            "ratio_median": statistics.median(ratios),
            "ratio_range": [min(ratios), max(ratios)],
            "idle_median": statistics.median(r["idle_samples_per_s"] for r in rs),
            "idle_offered_median": statistics.median(r["idle_offered_per_s"] for r in rs),
            "loaded_offered_median": statistics.median(r["loaded_offered_per_s"] for r in rs),
            "loaded_median": statistics.median(r["loaded_samples_per_s"] for r in rs),
            "requests_per_s_median": statistics.median(r["requests_per_s"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "p99_ms_median": {
                route: statistics.median(r["routes"][route]["p99_ms"] for r in rs)
                for route in rs[0]["routes"]
            },
            "p50_ms_median": {
                route: statistics.median(r["routes"][route]["p50_ms"] for r in rs)
                for route in rs[0]["routes"]
            },
        }
    result = {
        "command": f"python bench/load.py --clients {a.clients} --seconds {a.seconds} "
        f"--runs {a.runs}",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, shared with other work",
        "server_errors": server_errors,
        "summary": summary,
        "runs": runs,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "load.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# HTTP load while samples stream",
        "",
        f"Command: `{result['command']}`; {result['machine']}; loopback only.",
        f"Server errors over all runs: {server_errors:.0f}.",
        "",
        "| stream | served/s idle (offered) | served/s under load (offered) | ratio, median "
        "[range] | requests/s | errors | p50 / p99 ms: /metrics | /v1/status | /v1/samples |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, s in summary.items():
        p50, p99 = s["p50_ms_median"], s["p99_ms_median"]
        cells = " | ".join(f"{p50[r]:.1f} / {p99[r]:.1f}" for r in sorted(p50))
        lines.append(
            f"| {mode} | {s['idle_median']:.1f} ({s['idle_offered_median']:.1f}) | "
            f"{s['loaded_median']:.1f} ({s['loaded_offered_median']:.1f}) | "
            f"{s['ratio_median']:.2f} [{s['ratio_range'][0]:.2f}, {s['ratio_range'][1]:.2f}] | "
            f"{s['requests_per_s_median']:.0f} | {s['errors']} | {cells} |"
        )
    lines.append("")
    (OUT / "load.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
