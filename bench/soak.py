"""Soak: many samples with recurring shifts; are memory, files, threads and disk flat?

Run: ``python bench/soak.py [--samples 1000000] [--seconds 3000] [--daemon-samples
1000000] [--daemon-seconds 3000] [--parallel] [--threads 1] [--retention tight] [--out
soak]`` (writes bench/results/<out>.json and <out>.md). Each part stops at whichever
bound comes first and says how far it got. The shortest run that still shows the
slopes: ``--samples 1000000 --seconds 900 --daemon-seconds 0 --threads 1`` (the replay
alone, about 4-8 minutes on two shared cores).

- replay: the daemon's :class:`Runtime` in this process, in simulated time (20 samples
  per simulated second, the default policy's rate), fed by the simulated nanosensor
  environment with a recurring shift every 5,000 samples, labels for 30 % of the
  samples after 10, the default rules (drift and low accuracy recalibrate) and default
  retention (``--retention tight``: limits that bind within the run, :data:`TIGHT`;
  ``--retention cycle``: limits that cycle many times within it, :data:`CYCLE`);
  served 64 at a time, as the daemon's main loop does;
- daemon: a real ``regulator run`` of the default policy with the same environment
  paced at 2,000 samples/s and shifting every 2.5 s, sampled from /proc (RSS, open
  files, threads) and its metrics. ``--parallel`` runs it beside the replay (one core
  each on a two-core machine; ``--threads`` sets torch's threads in both).

Each quantity is sampled along the run; its slope is a least-squares line over the
second half (after warm-up), given as the change it predicts over that half relative
to its mean there: "flat within 10 %" means |change| <= 10 %. Retention makes the
state directory a sawtooth, which a fitted line misjudges (its slope depends on where
the run stops in a tooth), so each quantity is also judged by quarters: the mean and the
peak over the 2nd quarter of the samples against those over the 4th, flat when both
change by at most 10 % (:func:`quarters`, the statistic the report judges by).

State growth per month of the default policy: the replay runs the default policy in
simulated time, so each part of the state directory (registry, event log, label
buffer, the rest) has a growth rate per simulated hour over the second half; times the
hours of a 30-day month, it is set beside that part's retention bound (from the
policy's ``storage`` limits and the sizes measured here), and the month's figure is the
smaller of the two.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from regulator.policy.model import Policy  # noqa: E402
from regulator.service.labels import LabelBuffer  # noqa: E402
from regulator.service.runtime import Runtime  # noqa: E402
from regulator.service.storage import tree_bytes  # noqa: E402
from regulator.tasks.sources import FeedbackChannel, make_source  # noqa: E402
from tests.service.conftest import DaemonProcess, write_policy  # noqa: E402

OUT = Path(__file__).parent / "results"
SHIFT_EVERY = 5_000
RATE_HZ = 20.0
MONTH_H = 30 * 24.0
PARTS = ("registry", "events", "labels", "other")


HEADLINE = ("rss_mb", "open_files", "threads", "state_mb")  # judged flat within +-10 %
TIGHT = {"keep_versions": 4, "keep_served_versions": 4, "event_log_max_bytes": 1 << 20,
         "event_log_files": 1, "max_labels": 1_000}  # fmt: skip
"""``--retention tight``: storage limits that bind within a run of 10^6 samples (the event
log reaches about one rotation in it)."""
CYCLE = {**TIGHT, "event_log_max_bytes": 128 << 10}
"""``--retention cycle``: as tight, with an event log of 128 KiB, so that the event log
rotates about every 60,000 samples and the label file is compacted about every 3,000:
both run through many cycles inside a run of 10^6 samples, and the state directory is a
sawtooth whose peaks and means can be compared quarter by quarter."""
RETENTION = {"default": {}, "tight": TIGHT, "cycle": CYCLE}
QUARTERS = (2, 4)  # compared: the 2nd quarter (warm-up over) with the 4th (the end)
SAMPLE_EVERY = 2_560  # samples between two rows: about 0.8 of a label compaction's cycle
WINDOWS = 8  # per-window maxima of the state directory, shown to see the sawtooth's peaks

_BENCH_TIDS: set[int] = set()  # this script's own threads (the daemon part's watcher)


def _proc(pid: int | str = "self") -> dict[str, float]:
    """RSS, open files and threads of ``pid``; for this process, less the threads of
    the bench itself (with --parallel the daemon part is watched from a thread here,
    and its end read as the replay's thread count falling, 4 -> 3, in the first run)."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    threads = float(fields["Threads"])
    if pid == "self":
        alive = {int(t) for t in os.listdir("/proc/self/task")}
        threads -= len(_BENCH_TIDS & alive)
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "threads": threads,
        "open_files": float(len(os.listdir(f"/proc/{pid}/fd"))),
    }


def state_parts(state: Path) -> dict[str, float]:
    """MB of the state directory in all and by part (registry, event log files, label
    buffer, everything else: monitors, lock, quarantine)."""
    total = tree_bytes(state)
    reg = tree_bytes(state / "registry") if (state / "registry").is_dir() else 0
    events = sum(p.stat().st_size for p in state.glob("events.jsonl*"))
    labels = sum(p.stat().st_size for p in state.glob("labels.jsonl*"))
    return {
        "state_mb": total / 1e6,
        "registry_mb": reg / 1e6,
        "events_mb": events / 1e6,
        "labels_mb": labels / 1e6,
        "other_mb": (total - reg - events - labels) / 1e6,
    }


def slopes(rows: list[dict[str, float]], x: str, keys: list[str]) -> dict[str, Any]:
    """Per key: the change a least-squares line predicts over the second half, in % of
    the mean there, the slope per unit of ``x``, and the raw first/last values."""
    half = rows[len(rows) // 2 :]
    xs = np.array([r[x] for r in half], dtype=float)
    out: dict[str, Any] = {}
    for k in keys:
        ys = np.array([r[k] for r in half], dtype=float)
        if len(xs) < 3 or np.ptp(xs) == 0:
            out[k] = None
            continue
        slope = float(np.polyfit(xs, ys, 1)[0])
        mean = float(np.mean(ys))
        change = slope * float(np.ptp(xs))
        out[k] = {"change_pct": 100 * change / mean if mean else 0.0, "slope": slope,
                  "first": float(ys[0]), "last": float(ys[-1]), "mean": mean}  # fmt: skip
    return out


def quarters(rows: list[dict[str, float]], keys: list[str]) -> dict[str, Any]:
    """Per key: mean and peak over the 2nd and the 4th quarter of the rows and their
    change (4th against 2nd, in %). Retention makes the state directory a sawtooth (it
    grows, then a rotation or compaction drops it); a line fitted to a sawtooth swings
    with where the run stops in a tooth, while the peaks and means of two quarters that
    each hold several teeth do not. "Flat within 10 %" here: both changes within 10 %."""
    n = len(rows)
    if n < 8:
        return {}
    parts = {q: rows[(q - 1) * n // 4 : q * n // 4] for q in QUARTERS}
    a, b = QUARTERS
    out: dict[str, Any] = {}
    for k in keys:
        mean = {q: float(np.mean([r[k] for r in rs])) for q, rs in parts.items()}
        peak = {q: float(max(r[k] for r in rs)) for q, rs in parts.items()}
        d_mean = 100 * (mean[b] - mean[a]) / mean[a] if mean[a] else 0.0
        d_peak = 100 * (peak[b] - peak[a]) / peak[a] if peak[a] else 0.0
        out[k] = {"mean_q2": mean[a], "mean_q4": mean[b], "mean_change_pct": d_mean,
                  "peak_q2": peak[a], "peak_q4": peak[b], "peak_change_pct": d_peak,
                  "flat": abs(d_mean) <= 10 and abs(d_peak) <= 10}  # fmt: skip
    return out


def window_max(rows: list[dict[str, float]], key: str) -> list[float]:
    """The maximum of ``key`` in each of :data:`WINDOWS` equal windows of the run."""
    n = len(rows)
    bounds = [(w * n // WINDOWS, (w + 1) * n // WINDOWS) for w in range(WINDOWS)]
    return [max(r[key] for r in rows[lo:hi]) for lo, hi in bounds if hi > lo]


def cycles(rows: list[dict[str, float]]) -> dict[str, float]:
    """Event-log rotations and label-file compactions in all and over the second half."""
    if not rows:
        return {}
    mid = rows[len(rows) // 2]
    return {
        "event_rotations": rows[-1]["event_rotations"],
        "event_rotations_2nd_half": rows[-1]["event_rotations"] - mid["event_rotations"],
        "label_compactions": rows[-1]["label_compactions"],
        "label_compactions_2nd_half": rows[-1]["label_compactions"] - mid["label_compactions"],
    }


def soak_replay(policy: Policy, n_samples: int, seconds: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="soak-replay-"))
    state = root / "state"
    sim_t = [0.0]
    rt = Runtime(policy, state, clock=lambda: sim_t[0], inline_jobs=True)
    source = make_source("simulated", family="nanosensor", seed=0, rate_hz=None,
                         schedule={"kind": "recurring", "period": SHIFT_EVERY})  # fmt: skip
    fb = FeedbackChannel(10, 0.3, seed=0)
    rows: list[dict[str, float]] = []
    batch: list[tuple[str, np.ndarray]] = []
    t0 = time.monotonic()
    i = 0
    for s in fb.wrap(source):
        batch.append((s.sample_id, s.x))
        i += 1
        if len(batch) == 64:
            sim_t[0] = i / RATE_HZ
            rt.process_batch(batch)
            batch = []
            ready = fb.pop_ready()
            if ready:
                rt.add_labels([(sid, y, None) for sid, y in ready])
            rt.tick()
        if i % SAMPLE_EVERY == 0:
            rows.append({"samples": i, "sim_h": i / RATE_HZ / 3600,
                         "wall_s": time.monotonic() - t0, **_proc(), **state_parts(state),
                         "recalibrations": len(rt.results),
                         "versions": len(rt.registry.versions()),
                         "event_rotations": rt.state.events.rotations,
                         "label_compactions": rt.state.labels.compactions})  # fmt: skip
            print(f"replay {json.dumps(rows[-1])}", flush=True)
        if i >= n_samples or time.monotonic() - t0 > seconds:
            break
    outcomes: dict[str, int] = {}
    for r in rt.results:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    # the most recalibrations that did work (not skipped) in any simulated hour
    worked = sorted(r.t_s for r in rt.results if r.outcome != "skipped")
    busiest = max((sum(1 for u in worked if t <= u < t + 3600) for t in worked), default=0)
    sim_hours = i / RATE_HZ / 3600
    sizes = _sizes(rt, state)
    rt.close()
    keys = [*HEADLINE, *(f"{p}_mb" for p in PARTS)]
    res = {
        "samples": i,
        "wall_s": time.monotonic() - t0,
        "samples_per_s": i / (time.monotonic() - t0),
        "simulated_hours": sim_hours,
        "recalibrations": outcomes,
        "recalibrations_per_simulated_hour": sum(outcomes.values()) / sim_hours,
        "most_in_any_simulated_hour": busiest,
        "max_per_hour": policy.recalibration.max_per_hour,
        "rows": rows,
        "slopes": slopes(rows, "samples", keys),
        "quarters": quarters(rows, keys),
        "window_max_state_mb": window_max(rows, "state_mb"),
        "cycles": cycles(rows),
        "peak_rss_mb_of_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sizes": sizes,
    }
    res["month"] = month(policy, res)
    return res


def _sizes(rt: Runtime, state: Path) -> dict[str, float]:
    """Bytes of one version folder and of one label line, as measured; the label file's
    compaction factor (it holds up to that many times ``max_labels`` lines)."""
    versions = [tree_bytes(rt.registry.path(v.version)) for v in rt.registry.versions()]
    path = state / "labels.jsonl"
    lines = path.read_bytes().count(b"\n") if path.exists() else 0
    compact = inspect.signature(LabelBuffer).parameters["compact_factor"].default
    return {
        "version_bytes": float(np.mean(versions)) if versions else 0.0,
        "label_line_bytes": path.stat().st_size / lines if lines else 0.0,
        "label_file_lines": float(lines),
        "labels_kept": float(len(rt.state.labels)),
        "label_compact_factor": float(compact),
    }


def retention_bounds_mb(policy: Policy, sizes: dict[str, float]) -> dict[str, float]:
    """Per part, the most MB that ``policy``'s storage limits let it hold (each bound
    plus at most one write: rotation and compaction follow the write that crosses)."""
    st = policy.storage
    return {
        # the newest keep_versions, the newest keep_served that ever served, the first
        # and the served one
        "registry": (st.keep_versions + st.keep_served_versions + 2) * sizes["version_bytes"] / 1e6,
        # the live file (rotated once past max_bytes) and event_log_files rotated ones
        "events": (st.event_log_files + 1) * st.event_log_max_bytes / 1e6,
        # the file is compacted once it holds compact_factor times max_labels lines
        "labels": sizes["label_compact_factor"] * st.max_labels * sizes["label_line_bytes"] / 1e6,
    }


def month(policy: Policy, replay: dict[str, Any]) -> dict[str, Any]:
    """Per part: growth per simulated hour over the second half, extrapolated to a
    30-day month, beside the retention bound; the month's figure is the smaller."""
    sizes, sl = replay["sizes"], replay["slopes"]
    bounds_mb = retention_bounds_mb(policy, sizes)
    out: dict[str, Any] = {}
    total = 0.0
    for p in PARTS:
        s = sl.get(f"{p}_mb")
        if s is None:
            continue
        per_h = s["slope"] * RATE_HZ * 3600  # slope is per sample
        now = replay["rows"][-1][f"{p}_mb"]
        extrapolated = now + max(per_h, 0.0) * (MONTH_H - replay["simulated_hours"])
        bound = bounds_mb.get(p)
        at_month = min(extrapolated, bound) if bound is not None else extrapolated
        total += at_month
        out[p] = {"mb_now": now, "mb_per_simulated_hour": per_h,
                  "extrapolated_mb": extrapolated, "retention_bound_mb": bound,
                  "month_mb": at_month}  # fmt: skip
    out["total_month_mb"] = total
    out["retention_bound_total_mb"] = sum(bounds_mb.values()) + out.get("other", {}).get(
        "month_mb", 0.0
    )
    default = retention_bounds_mb(Policy(), sizes)
    out["default_policy_bound_mb"] = {**default, "total": sum(default.values())}
    return out


def soak_daemon(prior: Path, n_samples: int, seconds: float, threads: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="soak-daemon-"))
    data = Policy().model_dump(mode="json")
    data["model"]["prior"] = str(prior)
    data["source"].update({"rate_hz": 2000, "schedule": {"kind": "recurring", "period_s": 2.5}})
    cfg = write_policy(root / "policy.yaml", data)
    env = {"OMP_NUM_THREADS": str(threads)} if threads else {}
    d = DaemonProcess(cfg, root / "state", root / "daemon.log", extra_env=env).start()
    rows: list[dict[str, float]] = []
    try:
        d.wait_ready(180)
        assert d.proc is not None
        t0 = time.monotonic()
        samples = 0.0
        while time.monotonic() - t0 < seconds and samples < n_samples:
            time.sleep(10)
            samples = d.metric("regulator_samples_total")
            rows.append({"wall_s": time.monotonic() - t0, **_proc(d.proc.pid),
                         "samples": samples, **state_parts(root / "state"),
                         "recalibrations": d.metric("regulator_recalibrations_total")})  # fmt: skip
            print(f"daemon {json.dumps(rows[-1])}", flush=True)
        outcomes = {o: d.metric("regulator_recalibrations_total", outcome=o)
                    for o in ("accepted", "rejected", "failed", "skipped")}  # fmt: skip
    finally:
        d.close()
    wall = rows[-1]["wall_s"] if rows else 0.0
    keys = [*HEADLINE, *(f"{p}_mb" for p in PARTS)]
    return {
        "seconds": wall,
        "samples": rows[-1]["samples"] if rows else 0,
        "samples_per_s": rows[-1]["samples"] / wall if wall else 0.0,
        "recalibrations": outcomes,
        "max_per_hour": Policy().recalibration.max_per_hour,
        "rows": rows,
        "slopes": slopes(rows, "wall_s", keys),
        "quarters": quarters(rows, keys),
        "window_max_state_mb": window_max(rows, "state_mb"),
    }


def _table(name: str, res: dict[str, Any]) -> list[str]:
    """First and last of the second half, the range over the whole run, the fitted
    change over the second half and whether it is within +-10 %."""
    lines = [
        f"| {name} | quantity | first | last (2nd half) | min - max (whole run) "
        "| change over the 2nd half | flat within +-10 % |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, v in res["slopes"].items():
        if v is not None:
            vals = [r[k] for r in res["rows"]]
            flat = "yes" if abs(v["change_pct"]) <= 10 else "**no**"
            if k not in HEADLINE:  # a part of state_mb, shown to say where disk goes
                flat = f"(part: {v['last'] - v['first']:+.2f} MB)"
            lines.append(
                f"| | {k} | {v['first']:.2f} | {v['last']:.2f} | {min(vals):.2f} - "
                f"{max(vals):.2f} | {v['change_pct']:+.1f} % | {flat} |"
            )
    return lines


def _quarters_md(res: dict[str, Any]) -> list[str]:
    """The sawtooth-proof statistic: mean and peak of the 2nd quarter against the 4th."""
    q = res.get("quarters") or {}
    if not q:
        return []
    lines = [
        "Flatness by quarter (the statistic judged: retention makes the state directory a "
        "sawtooth, so the mean and the peak of the 2nd quarter of the samples are set beside "
        "those of the 4th; flat means both changes within +-10 %):",
        "",
        "| quantity | mean Q2 | mean Q4 | mean change | peak Q2 | peak Q4 | peak change "
        "| flat within +-10 % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, v in q.items():
        flat = ("yes" if v["flat"] else "**no**") if k in HEADLINE else "(part)"
        lines.append(
            f"| {k} | {v['mean_q2']:.2f} | {v['mean_q4']:.2f} | {v['mean_change_pct']:+.1f} % "
            f"| {v['peak_q2']:.2f} | {v['peak_q4']:.2f} | {v['peak_change_pct']:+.1f} % | {flat} |"
        )
    lines.append("")
    c = res.get("cycles")
    if c:
        lines += [
            f"Retention cycles: {c['event_rotations']:.0f} event-log rotations "
            f"({c['event_rotations_2nd_half']:.0f} in the 2nd half), "
            f"{c['label_compactions']:.0f} label-file compactions "
            f"({c['label_compactions_2nd_half']:.0f} in the 2nd half).",
            "",
        ]
    w = res.get("window_max_state_mb") or []
    if w:
        lines += [
            "State directory maximum (MB) in each eighth of the run: "
            f"{', '.join(f'{x:.2f}' for x in w)}.",
            "",
        ]
    return lines


def _month_md(m: dict[str, Any], replay: dict[str, Any], which: str) -> list[str]:
    lines = [
        f"## State directory growth per month ({which}, 20 samples/s)",
        "",
        f"From the replay's second half ({replay['simulated_hours']:.1f} simulated hours in "
        f"all), extrapolated to 720 hours; one version folder "
        f"{replay['sizes']['version_bytes'] / 1e3:.0f} kB, one stored label line "
        f"{replay['sizes']['label_line_bytes']:.0f} B (measured; the label file is compacted at "
        f"{replay['sizes']['label_compact_factor']:g}x max_labels lines).",
        "",
        "| part | MB at the end | MB per simulated hour | extrapolated to a month (MB) "
        "| retention bound (MB) | month (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for p in PARTS:
        if p in m:
            r = m[p]
            bound = "none" if r["retention_bound_mb"] is None else f"{r['retention_bound_mb']:.1f}"
            lines.append(
                f"| {p} | {r['mb_now']:.2f} | {r['mb_per_simulated_hour']:.3f} | "
                f"{r['extrapolated_mb']:.1f} | {bound} | {r['month_mb']:.1f} |"
            )
    lines += [
        f"| **all** | | | | {m['retention_bound_total_mb']:.1f} | **{m['total_month_mb']:.1f}** |",
        "",
    ]
    d = m.get("default_policy_bound_mb")
    if d:
        lines += [
            "The default policy's retention bounds, with the sizes measured here: registry "
            f"{d['registry']:.1f} MB, events {d['events']:.1f} MB, labels {d['labels']:.1f} MB, "
            f"{d['total']:.1f} MB in all: the state directory cannot grow past that (plus the "
            "monitors' few kB and one write) however long the daemon runs.",
            "",
        ]
    return lines


def _md(result: dict[str, Any]) -> str:
    replay, daemon, started = result["replay"], result["daemon"], result["started"]
    which = "default policy"
    if "storage" in result:
        kind = result.get("retention", "tight")
        which = f"default policy with {kind} retention, storage {result['storage']}"
    lines = ["# Soak", "", f"Command: `{result['command']}`; {result['machine']}; "
             f"started {started}; code at {result.get('code', 'unknown')}.", ""]  # fmt: skip
    if replay:
        lines += [
            f"Replay: {replay['samples']:,} samples ({replay['simulated_hours']:.1f} simulated "
            f"hours) in {replay['wall_s']:.0f} s ({replay['samples_per_s']:.0f} samples/s); "
            f"recalibrations {replay['recalibrations']} = "
            f"{replay['recalibrations_per_simulated_hour']:.2f} per simulated hour; at most "
            f"{replay['most_in_any_simulated_hour']} that did work in any simulated hour "
            f"(max_per_hour {replay['max_per_hour']}).",
            "",
            *_table("replay", replay),
            "",
            *_quarters_md(replay),
            *_month_md(replay["month"], replay, which),
        ]
    if daemon:
        worked = sum(daemon["recalibrations"].get(o, 0) for o in ("accepted", "rejected", "failed"))
        lines += [
            f"Daemon: {daemon['samples']:,.0f} samples in {daemon['seconds']:.0f} s "
            f"({daemon['samples_per_s']:.0f} samples/s); recalibrations "
            f"{daemon['recalibrations']}: {worked:.0f} did work, at most "
            f"{daemon['max_per_hour'] * math.ceil(daemon['seconds'] / 3600)} allowed in a run "
            f"of {daemon['seconds'] / 3600:.2f} h (max_per_hour {daemon['max_per_hour']}).",
            "",
            *_table("daemon", daemon),
            "",
            *_quarters_md(daemon),
        ]
    for rc in result.get("rechecks", []):
        lines += [
            f"Re-check at {rc['code']}: `{rc['command']}`: {rc['samples']:,} samples in "
            f"{rc['wall_s']:.0f} s; recalibrations {rc['recalibrations']}; at most "
            f"{rc['most_in_any_simulated_hour']} that did work in any simulated hour "
            f"(max_per_hour {rc['max_per_hour']}); change over the 2nd half (%): "
            f"{rc['slopes']}.",
            "",
        ]
        if "busiest_hour_400k_samples" in rc:
            lines += [
                "The busiest simulated hour of a 400,000-sample replay at the same code "
                f"(start time in simulated s, trigger, mode, outcome): "
                f"{rc['busiest_hour_400k_samples']}.",
                "",
            ]
    return "\n".join(lines)


def _code() -> str:
    """The commit this bench ran at, and whether the code it imports differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,
                              text=True, check=False).stdout.strip()  # fmt: skip

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "regulator", "bench/soak.py")
    return f"{head} (with uncommitted changes)" if dirty else head


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=3000)
    ap.add_argument("--daemon-samples", type=int, default=1_000_000)
    ap.add_argument("--daemon-seconds", type=float, default=3000)
    ap.add_argument("--parallel", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    ap.add_argument("--prior", type=Path, default=REPO / "models" / "nanosensor")
    ap.add_argument(
        "--retention",
        choices=tuple(RETENTION),
        default="default",
        help="tight: the replay's storage limits bind within the run (TIGHT); cycle: and "
        "the event log and label file cycle many times in it (CYCLE)",
    )
    ap.add_argument("--out", default="soak", help="results file name (OUT/<name>.json, .md)")
    a = ap.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    data = Policy().model_dump(mode="json")
    data["model"]["prior"] = str(a.prior)
    data["storage"].update(RETENTION[a.retention])
    policy = Policy.model_validate(data)
    daemon: dict[str, Any] | None = None
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    def run_daemon() -> None:
        nonlocal daemon
        _BENCH_TIDS.add(threading.get_native_id())
        daemon = soak_daemon(a.prior, a.daemon_samples, a.daemon_seconds, a.threads)

    worker = threading.Thread(target=run_daemon) if a.daemon_seconds > 0 else None
    if worker is not None and a.parallel:
        worker.start()
    replay = soak_replay(policy, a.samples, a.seconds) if a.seconds > 0 else None
    if worker is not None:
        if not a.parallel:
            worker.start()
        worker.join()
    result = {
        "command": " ".join(["python bench/soak.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, shared with other work",
        "started": started,
        "code": _code(),
        "replay": replay,
        "daemon": daemon,
    }
    OUT.mkdir(exist_ok=True)
    if a.retention != "default":
        result["retention"] = a.retention
        result["storage"] = policy.storage.model_dump()
    (OUT / f"{a.out}.json").write_text(json.dumps(result, indent=1) + "\n")
    text = _md(result)
    (OUT / f"{a.out}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
