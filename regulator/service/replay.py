"""``regulator replay``: the daemon's runtime and loop driven by recorded data, in
simulated time.

The same :class:`~regulator.service.runtime.Runtime` and
:class:`~regulator.service.loop.ServiceLoop` as ``regulator run`` (the same monitors,
rules, recalibration job, swaps and label delivery), fed as fast as possible; durations,
cooldowns and the budget's UTC day use simulated seconds (one sample every
``1 / rate_hz``). Each file is a segment; the report holds per-segment accuracy,
detections with their delays, recalibrations with their outcomes, and energy.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from regulator import atomic
from regulator.errors import ConfigError
from regulator.policy.model import Policy, ReplaySource
from regulator.service.loop import ServiceLoop
from regulator.service.runtime import Runtime, resolve_path
from regulator.tasks.formats import load_file
from regulator.tasks.sources import FeedbackChannel, SourceSample

DEFAULT_RATE_HZ = 20.0
PROGRESS_EVERY = 10  # samples between progress bar updates


def run_replay(
    policy: Policy,
    data: list[str],
    report_path: Path | None,
    state_dir: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Replay ``data`` files through the runtime; write and return the report.

    With ``progress``, bars on stderr (when it is a terminal) count the files read and
    the samples replayed, with the segment and its running accuracy."""
    if not data:
        if isinstance(policy.source, ReplaySource):
            data = list(policy.source.files)
        else:
            raise ConfigError("replay needs --data files (or a replay source in the policy)")
    rate, reveal_k, feedback = replay_settings(policy)
    files = [resolve_path(p) for p in data]
    bar_opts: dict[str, Any] = {"disable": None if progress else True, "dynamic_ncols": True}
    recordings = [load_file(p) for p in tqdm(files, desc="read", unit="file", **bar_opts)]
    bar = tqdm(total=sum(len(r.y) for r in recordings), desc="replay", unit="sample", **bar_opts)
    sim_t = [0.0]
    with tempfile.TemporaryDirectory(prefix="regulator-replay-") as tmp:
        root = state_dir or Path(tmp) / "state"
        clock = lambda: sim_t[0]  # noqa: E731
        rt = Runtime(policy, root, clock=clock, wall_clock=clock, inline_jobs=True)
        loop = ServiceLoop(rt, feedback)
        wall0 = time.perf_counter()
        segments: list[dict[str, Any]] = []
        i = 0
        for path, rec in zip(files, recordings, strict=True):
            seg_start = i
            n_det0, n_res0 = len(rt.detections), len(rt.results)
            labels0 = _labels_total(rt)
            revealed = reveal_rows(rec.y, reveal_k, policy.device.seed + len(segments))
            if revealed.size:
                sim_t[0] = i / rate
                rt.add_labels([(f"{path.stem}:{r}", rec.y[r].item(), rec.x[r]) for r in revealed])
            skip = set(revealed.tolist())
            correct: list[float] = []
            version0 = rt.serving.version
            after_swap: list[float] = []  # served by a model swapped in during the segment
            labels_at_swap: float | None = None
            e0 = rt.energy.inference_j_total
            for row in range(len(rec.y)):
                sim_t[0] = i / rate
                sid = f"{path.stem}:{row}"
                y = rec.y[row].item()
                out = loop.serve([SourceSample(sid, rec.x[row], y, sim_t[0])])[0]
                if isinstance(out, Exception):
                    raise out
                if row not in skip:
                    if rt.serving.bundle.kind == "classification":
                        correct.append(float(out["prediction"] == y))
                    else:
                        correct.append(abs(float(out["prediction"]) - float(y)))
                    if out["version"] != version0:
                        if labels_at_swap is None:
                            labels_at_swap = _labels_total(rt) - labels0
                        after_swap.append(correct[-1])
                i += 1
                if i % PROGRESS_EVERY == 0:
                    bar.update(PROGRESS_EVERY)
                    if correct and rt.serving.bundle.kind == "classification":
                        bar.set_postfix_str(f"{path.name} accuracy {np.mean(correct):.3f}")
            dets = rt.detections[n_det0:]
            segments.append(
                {
                    "file": str(path),
                    "samples": len(rec.y),
                    "first_sample": seg_start,
                    "labels_revealed": int(revealed.size),
                    "accuracy" if rt.serving.bundle.kind == "classification" else "mae": float(
                        np.mean(correct)
                    )
                    if correct
                    else None,
                    "detections": [
                        {**d, "delay_samples": d["sample"] - 1 - seg_start} for d in dets
                    ],
                    "recalibrations": [r.to_dict() for r in rt.results[n_res0:]],
                    # served by a model swapped in during this segment, and the labels
                    # (revealed and fed back) taken in the segment before its first swap
                    "after_swap": {
                        "samples": len(after_swap),
                        "score": float(np.mean(after_swap)) if after_swap else None,
                        "labels_before": labels_at_swap,
                    },
                    "inference_energy_j": rt.energy.inference_j_total - e0,
                    "model_version_at_end": rt.serving.version,
                }
            )
        report = {
            "policy_device": policy.device.id,
            "files": [str(p) for p in files],
            "samples": i,
            "wall_seconds": time.perf_counter() - wall0,
            "simulated_seconds": i / rate,
            "segments": segments,
            "recalibrations": [r.to_dict() for r in rt.results],
            "detections": rt.detections,
            "energy_j": {
                "inference": rt.energy.inference_j_total,
                "learning": rt.energy.learning_j_total,
            },
            "events": rt.state.events.read_all(),
        }
        rt.close()
    bar.update(i - bar.n)
    bar.close()
    if report_path is not None:
        atomic.write_json(report_path, report)
    return report


def _labels_total(rt: Runtime) -> float:
    got = rt.metrics_registry.get_sample_value(
        "regulator_labels_total", {"device": rt.policy.device.id}
    )
    return 0.0 if got is None else got


def replay_settings(policy: Policy) -> tuple[float, int, FeedbackChannel]:
    """What a replay of ``policy`` feeds: samples per simulated second, labelled samples
    per class revealed at each file's start, and the channel that reveals the rest (a
    fresh one, seeded by the device). Anything that plays replay's part (e.g. a client
    feeding a daemon on the samples' clock) uses the same."""
    src = policy.source if isinstance(policy.source, ReplaySource) else None
    rate = (src.rate_hz if src and src.rate_hz else None) or DEFAULT_RATE_HZ
    reveal_k = src.labels_per_class_at_segment_start if src else 0
    feedback = FeedbackChannel(
        src.label_delay_samples if src else 0,
        src.label_fraction if src else 0.0,
        seed=policy.device.seed,
    )
    return rate, reveal_k, feedback


def reveal_rows(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Row indices of ``k`` random samples per class, revealed as labelled at the start
    of a file (seeded: replay uses ``device.seed`` + the file's index)."""
    if k <= 0:
        return np.zeros(0, dtype=int)
    rng = np.random.default_rng(seed)
    rows: list[int] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rows += rng.choice(idx, size=min(k, len(idx)), replace=False).tolist()
    return np.asarray(sorted(rows), dtype=int)
