"""What a report is drawn from (:class:`Run`), read from either input of ``regulator
report``: a state directory's event log (``events.jsonl``) or a replay report (the JSON
``regulator replay`` writes); the outcome colours both reports use."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regulator.errors import DataFormatError, InputError

__all__ = ["OUTCOME_COLOURS", "Run", "load_run", "number", "series"]

OUTCOME_COLOURS = {
    "accepted": "tab:green",
    "rejected": "tab:orange",
    "skipped": "tab:orange",
    "failed": "tab:red",
}


@dataclass
class Run:
    """What a report is drawn from, whatever the input was."""

    source: str  # "events" or "replay"
    time_label: str
    snapshots: list[dict[str, Any]] = field(default_factory=list)  # each with "t"
    recalibrations: list[dict[str, Any]] = field(default_factory=list)  # each with "t"
    detections: list[dict[str, Any]] = field(default_factory=list)  # each with "t"
    marks: list[tuple[float, str]] = field(default_factory=list)  # (t, kind): rollback...
    segments: list[dict[str, Any]] = field(default_factory=list)  # replay only
    energy_totals: dict[str, float] = field(default_factory=dict)


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _read_events(path: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    bad = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            bad += 1  # a line torn by a crash; the event log drops those too
            continue
        if isinstance(rec, dict) and "kind" in rec and number(rec.get("ts")) is not None:
            events.append(rec)
        else:
            bad += 1
    if not events:
        raise DataFormatError(f"{path}: no events ({bad} unreadable lines)")
    return events


def _from_events(events: list[dict[str, Any]], *, time_key: str | None = None) -> Run:
    """A run from event-log records. ``time_key`` None: the ``ts`` of each event, from the
    first; else that field (``t_s``, simulated seconds in a replay) where present."""
    t0 = min(float(e["ts"]) for e in events)
    run = Run("events", "seconds since the first event")

    def when(e: dict[str, Any]) -> float:
        if time_key is not None:
            t = number(e.get("fields", {}).get(time_key))
            if t is not None:
                return t
        return float(e["ts"]) - t0

    for e in sorted(events, key=lambda e: float(e["ts"])):
        kind, f = e.get("kind"), e.get("fields") or {}
        if not isinstance(f, dict):
            continue
        t = when(e)
        if kind == "snapshot":
            run.snapshots.append({**f, "t": t})
        elif kind == "recalibration":
            run.recalibrations.append({**f, "t": t})
        elif kind == "detection":
            run.detections.append({**f, "t": t})
        elif kind in ("rollback", "reload", "alert", "low_power", "startup", "shutdown"):
            run.marks.append((t, str(kind)))
    return run


def _from_replay(report: dict[str, Any]) -> Run:
    events = [e for e in report.get("events") or [] if isinstance(e, dict) and "ts" in e]
    run = _from_events(events, time_key="t_s") if events else Run("replay", "")
    run.source = "replay"
    run.time_label = "simulated seconds"
    # The report's recalibrations are authoritative (simulated t_s); its detections are
    # the events' without the detector statistic, so the events' are used when present.
    if report.get("recalibrations") is not None:
        run.recalibrations = [
            {**r, "t": number(r.get("t_s")) or 0.0}
            for r in report["recalibrations"]
            if isinstance(r, dict)
        ]
    if report.get("detections") and not run.detections:  # events carry the statistic too
        run.detections = [
            {**d, "t": number(d.get("t_s")) or 0.0}
            for d in report["detections"]
            if isinstance(d, dict)
        ]
    samples, sim_s = number(report.get("samples")), number(report.get("simulated_seconds"))
    rate = samples / sim_s if samples and sim_s else None
    for seg in report.get("segments") or []:
        if not isinstance(seg, dict):
            continue
        first, n = number(seg.get("first_sample")) or 0.0, number(seg.get("samples")) or 0.0
        start, end = (first / rate, (first + n) / rate) if rate else (first, first + n)
        run.segments.append({**seg, "start": start, "end": end})
    if not rate and run.segments:
        run.time_label = "samples"
    energy = report.get("energy_j") or {}
    if isinstance(energy, dict):
        run.energy_totals = {k: v for k, v in energy.items() if number(v) is not None}
    return run


def load_run(path: Path) -> Run:
    """Read an ``events.jsonl`` or a replay report JSON into a :class:`Run`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            whole = json.loads(text)
        except ValueError:
            whole = None  # several lines: an event log
        if isinstance(whole, dict) and ("segments" in whole or "recalibrations" in whole):
            return _from_replay(whole)
        if isinstance(whole, dict) and "kind" in whole:
            return _from_events([whole])
        if whole is not None:
            raise DataFormatError(f"{path}: neither an event log nor a replay report")
    return _from_events(_read_events(path))


def series(snaps: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    ts, vs = [], []
    for s in snaps:
        v = number(s.get(key))
        if v is not None:
            ts.append(s["t"])
            vs.append(v)
    return ts, vs
