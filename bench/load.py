"""Concurrent HTTP load on a real daemon while samples stream: does serving keep up?

Run: ``python bench/load.py [--clients 8] [--seconds 15] [--runs 3]`` (writes
bench/results/load.json and load.md). Loopback only; every client stops by itself.

One ``regulator run`` with ``source: http`` and the shipped nanosensor prior. A pusher
streams samples to ``POST /v1/samples`` (one sample a request, as a sensor would):

- ``paced``: at a fixed 100 samples/s;
- ``flat-out``: back to back, as fast as it is answered (the daemon is then CPU-bound);
- ``gateway``: a 100 Hz sensor behind a gateway that posts every sample due by now in
  one request, one request in flight (what a sensor client does when an answer is
  late: the next request carries more samples, none is dropped or delayed by more
  than one answer).

Each run measures the samples served per second (``regulator_samples_total``) with the
pusher alone (idle), then with ``--clients`` threads looping over ``GET /metrics``,
``GET /v1/status`` and ``POST /v1/samples`` (requests/s, p50/p99 per route); the
figure is served/s under load over idle, median and range over the runs. Besides the
daemon's count, which includes the clients' own ``POST /v1/samples``, the pusher
counts its own samples answered with a prediction ("own"): whether the sensor's stream
is kept up with. A peer daemon with another ``http.metrics_max_age_s`` (``--peer-max-age``,
default 0: every scrape renders) is measured in the same runs, row by row in turn.
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


GATEWAY_MAX_SAMPLES = 256
"""The most samples a gateway request carries (a backlog beyond it waits a request)."""


def _push(url: str, x: np.ndarray, mode: str, stop: Any, sent: Any, refused: Any, own: Any) -> None:
    """The sensor: its own process, so the clients' threads do not slow its pushes."""
    rows = [xi.tolist() for xi in x]
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as c:
        i = 0
        t0 = t_next = time.monotonic()
        while not stop.is_set():
            if mode == "gateway":  # every sample due by now, one request
                due = int((time.monotonic() - t0) * 100.0) + 1 - i
                n = min(max(due, 0), GATEWAY_MAX_SAMPLES)
                if n == 0:
                    time.sleep(max(0.0, t0 + (i + 1) / 100.0 - time.monotonic()))
                    continue
            else:
                n = 1
            batch = [{"x": rows[(i + k) % len(rows)]} for k in range(n)]
            r = c.post("/v1/samples", json={"samples": batch})
            with sent.get_lock():
                sent.value += n
            answered = 0
            if r.status_code == 200:
                answered = len(r.json().get("predictions", []))
            with own.get_lock():
                own.value += answered
            if answered < n:
                with refused.get_lock():
                    refused.value += n - answered
            i += n
            if mode == "paced":
                t_next += 1.0 / 100.0
                time.sleep(max(0.0, t_next - time.monotonic()))


class Pusher:
    def __init__(self, url: str, x: np.ndarray, mode: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop = ctx.Event()
        self.sent = ctx.Value("q", 0)
        self.refused_v = ctx.Value("q", 0)
        self.own = ctx.Value("q", 0)  # its samples answered with a prediction
        self.proc = ctx.Process(
            target=_push,
            args=(url, x, mode, self.stop, self.sent, self.refused_v, self.own),
            daemon=True,
        )

    def start(self) -> None:
        self.proc.start()

    def join(self, timeout: float) -> None:
        self.proc.join(timeout)

    @property
    def refused(self) -> int:
        return int(self.refused_v.value)


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _served_rate(
    d: DaemonProcess, seconds: float, pusher: Pusher
) -> tuple[float, float, float, dict[str, float]]:
    """(served by the daemon, offered by the pusher, the pusher's own answered) samples
    per second over ``seconds``, and the cores each process used meanwhile (the daemon,
    the pusher, this process: the clients' threads)."""
    assert d.proc is not None
    pids = {"daemon": d.proc.pid, "pusher": pusher.proc.pid or 0, "clients": os.getpid()}
    n0, s0, o0 = d.metric("regulator_samples_total"), pusher.sent.value, pusher.own.value
    c0 = {k: _cpu_s(p) for k, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    cores = {k: (_cpu_s(p) - c0[k]) / dt for k, p in pids.items()}
    served = (d.metric("regulator_samples_total") - n0) / dt
    return served, (pusher.sent.value - s0) / dt, (pusher.own.value - o0) / dt, cores


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
    pusher = Pusher(d.url, x, mode)
    pusher.start()
    try:
        time.sleep(4)  # settle (the pusher process starts)
        idle, idle_offered, idle_own, idle_cores = _served_rate(d, a.seconds, pusher)
        out: dict[str, Any] = {}
        t = threading.Thread(target=lambda: out.update(_clients(d.url, x, a.clients, a.seconds)))
        t.start()
        time.sleep(1)  # clients ramp up
        loaded, loaded_offered, loaded_own, loaded_cores = _served_rate(d, a.seconds - 2, pusher)
        t.join()
    finally:
        pusher.stop.set()
        pusher.join(30)
    return {"idle_samples_per_s": idle, "loaded_samples_per_s": loaded,
            "idle_offered_per_s": idle_offered, "loaded_offered_per_s": loaded_offered,
            "ratio": loaded / idle if idle else float("nan"), "pusher_refused": pusher.refused,
            "idle_own_per_s": idle_own, "loaded_own_per_s": loaded_own,
            "own_ratio": loaded_own / idle_own if idle_own else float("nan"),
            "idle_cores": idle_cores, "loaded_cores": loaded_cores,
            **out}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prior", type=Path, default=REPO / "models" / "nanosensor")
    ap.add_argument(
        "--peer-max-age", type=float, default=0.0,
        help="http.metrics_max_age_s of the peer daemon run beside the shipped default "
        "(0: every scrape renders, the design before the age bound); negative: no peer",
    )  # fmt: skip
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="load-"))
    x, _ = nanosensor(200)
    # The shipped default and a peer, each its own daemon, measured in turn.
    configs: dict[str, float | None] = {"": None}
    if a.peer_max_age >= 0:
        configs[f", metrics_max_age_s {a.peer_max_age:g}"] = a.peer_max_age
    daemons: dict[str, DaemonProcess] = {}
    runs: dict[str, list[dict[str, Any]]] = {}
    server_errors = 0.0
    try:
        for tag, age in configs.items():
            http = {} if age is None else {"http": {"metrics_max_age_s": age}}
            policy = policy_dict(a.prior, source={"kind": "http", "queue_size": 4096}, **http)
            folder = root / f"d{len(daemons)}"
            folder.mkdir()
            cfg = write_policy(folder / "policy.yaml", policy)
            daemons[tag] = DaemonProcess(cfg, folder / "state", folder / "daemon.log").start()
            for mode in ("paced", "flat-out", "gateway"):
                runs[mode + tag] = []
        for d in daemons.values():
            d.wait_ready(180)
        for i in range(a.runs):
            for tag, d in daemons.items():
                for mode in ("paced", "flat-out", "gateway"):
                    r = one_run(d, x, mode, a)
                    runs[mode + tag].append(r)
                    print(
                        f"run {i + 1} {mode}{tag}: idle {r['idle_samples_per_s']:.1f}/s, "
                        f"loaded {r['loaded_samples_per_s']:.1f}/s, ratio {r['ratio']:.2f}, "
                        f"own {r['idle_own_per_s']:.1f} -> {r['loaded_own_per_s']:.1f}/s "
                        f"({r['own_ratio']:.2f}), "
                        f"{r['requests_per_s']:.0f} req/s, errors {r['errors']}",
                        flush=True,
                    )
        for d in daemons.values():
            server_errors += d.metric("regulator_http_server_errors_total")
    finally:
        for d in daemons.values():
            d.close()
    summary = {}
    for mode, rs in runs.items():
        ratios = [r["ratio"] for r in rs]
        own = [r["own_ratio"] for r in rs]
        summary[mode] = {
            "own_ratio_median": statistics.median(own),
            "own_ratio_range": [min(own), max(own)],
            "idle_own_median": statistics.median(r["idle_own_per_s"] for r in rs),
            "cores_median": {
                phase: {
                    who: statistics.median(r[f"{phase}_cores"][who] for r in rs)
                    for who in ("daemon", "pusher", "clients")
                }
                for phase in ("idle", "loaded")
            },
            "loaded_own_median": statistics.median(r["loaded_own_per_s"] for r in rs),
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
        f"--runs {a.runs} --peer-max-age {a.peer_max_age:g}",
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
        "Rows without a suffix: the shipped policy (`http.metrics_max_age_s` 0.25: a scrape "
        "may share a render at most 0.25 s old); the peer's rows name its setting. Each "
        "run measures every row in turn.",
        "",
        "| stream | served/s idle (offered) | served/s under load (offered) | ratio, median "
        "[range] | the pusher's own: idle, under load, ratio [range] | requests/s | errors "
        "| p50 / p99 ms: /metrics | /v1/status | /v1/samples | cores used, daemon / pusher / "
        "clients: idle; under load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, s in summary.items():
        p50, p99 = s["p50_ms_median"], s["p99_ms_median"]
        cells = " | ".join(f"{p50[r]:.1f} / {p99[r]:.1f}" for r in sorted(p50))
        cores = "; ".join(
            " / ".join(f"{s['cores_median'][ph][w]:.2f}" for w in ("daemon", "pusher", "clients"))
            for ph in ("idle", "loaded")
        )
        cells += f" | {cores}"
        lines.append(
            f"| {mode} | {s['idle_median']:.1f} ({s['idle_offered_median']:.1f}) | "
            f"{s['loaded_median']:.1f} ({s['loaded_offered_median']:.1f}) | "
            f"{s['ratio_median']:.2f} [{s['ratio_range'][0]:.2f}, {s['ratio_range'][1]:.2f}] | "
            f"{s['idle_own_median']:.1f}, {s['loaded_own_median']:.1f}, "
            f"{s['own_ratio_median']:.2f} [{s['own_ratio_range'][0]:.2f}, "
            f"{s['own_ratio_range'][1]:.2f}] | "
            f"{s['requests_per_s_median']:.0f} | {s['errors']} | {cells} |"
        )
    lines.append("")
    (OUT / "load.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
