"""``regulator report``: PNG plots of a run, for people without Grafana at hand.

The input is either a state directory's event log (``events.jsonl``: one
``{"ts", "kind", "fields"}`` a line) or a replay report (the JSON ``regulator replay``
writes). Each plot is drawn from whatever the input holds, and a plot with nothing to
show is not written:

``timeline.png``
    Always: drift detections, recalibrations by outcome, rollbacks, alerts and reloads.
``accuracy.png``
    Accuracy over time from ``snapshot`` events; without them, the held-out accuracy of
    the serving model and of each candidate at every recalibration (event log), or each
    segment's accuracy (replay).
``ood.png``
    The OOD p-value against its threshold from ``snapshot`` events; without them, the
    detector statistic at each drift detection.
``energy.png``
    Cumulative inference and learning energy from ``snapshot`` events (and power when
    they carry it); without them, learning energy per recalibration (event log) or
    inference and learning energy per segment (replay).
``spike_density.png``
    Spikes per neuron per step, per layer, from ``snapshot`` events.

Recalibrations are drawn as vertical lines (green accepted, orange rejected or skipped,
red failed) on every time plot. Times are seconds from the first event (event log:
wall clock) or simulated seconds (replay).

A ``snapshot`` event is ``{"kind": "snapshot", "fields": {"t_s", "accuracy",
"ood_p_value", "ood_threshold", "spike_density": {layer: density}, "power_w",
"energy_inference_j", "energy_learning_j", "version"}}``; every field is optional.

>>> import json, tempfile
>>> from pathlib import Path
>>> d = Path(tempfile.mkdtemp())
>>> ev = [{"ts": 10.0, "kind": "startup", "fields": {"version": "v1"}},
...       {"ts": 20.0, "kind": "recalibration", "fields": {"outcome": "accepted"}}]
>>> _ = (d / "events.jsonl").write_text("".join(json.dumps(e) + "\\n" for e in ev))
>>> [p.name for p in write_report(d / "events.jsonl", d / "out")]
['timeline.png']
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from regulator.report_data import OUTCOME_COLOURS, Run, load_run, number, series

__all__ = ["Run", "load_run", "write_report"]

DPI = 100
SIZE = (9.0, 4.0)


# --- drawing -------------------------------------------------------------------------------


def _figure(rows: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure  # no pyplot: no global state, any thread

    fig = Figure(figsize=(SIZE[0], SIZE[1] * (1 + 0.6 * (rows - 1))), dpi=DPI)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, list(axes)


def _recal_lines(ax: Any, run: Run, label: bool = True) -> None:
    seen: set[str] = set()
    for r in run.recalibrations:
        outcome = str(r.get("outcome", "?"))
        colour = OUTCOME_COLOURS.get(outcome, "tab:gray")
        name = f"recalibration {outcome}" if label and outcome not in seen else None
        seen.add(outcome)
        ax.axvline(r["t"], color=colour, linestyle="--", linewidth=1.2, alpha=0.8, label=name)


def _save(fig: Any, axes: Iterable[Any], path: Path, title: str, xlabel: str) -> Path:
    axes = list(axes)
    axes[0].set_title(title)
    axes[-1].set_xlabel(xlabel)
    for ax in axes:
        ax.grid(True, alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _si_axis(ax: Any, unit: str) -> None:
    """Ticks in SI prefixes (1.75 mJ, 12 µW) from zero: no 1e-5 offset, and a flat
    series looks flat rather than like a ramp across a tiny range."""
    from matplotlib.ticker import EngFormatter

    ax.yaxis.set_major_formatter(EngFormatter(unit=unit))
    ax.set_ylim(bottom=0)


def _plot_timeline(run: Run, path: Path) -> Path:
    fig, (ax,) = _figure()
    rows = {"detection": 0}
    for r in run.recalibrations:
        rows.setdefault(f"recalibration\n{r.get('outcome', '?')}", len(rows))
    for _, kind in run.marks:
        rows.setdefault(kind, len(rows))
    if run.detections:
        ax.scatter(
            [d["t"] for d in run.detections],
            [0] * len(run.detections),
            marker="v",
            s=60,
            color="tab:purple",
            label="drift detection",
            zorder=3,
        )
    for r in run.recalibrations:
        outcome = str(r.get("outcome", "?"))
        ax.scatter(
            [r["t"]],
            [rows[f"recalibration\n{outcome}"]],
            marker="o",
            s=50,
            color=OUTCOME_COLOURS.get(outcome, "tab:gray"),
            zorder=3,
        )
    for t, kind in run.marks:
        ax.scatter([t], [rows[kind]], marker="|", s=200, color="tab:blue", zorder=3)
    for seg in run.segments:
        ax.axvspan(seg["start"], seg["end"], alpha=0.08, color="tab:gray")
    _recal_lines(ax, run, label=False)
    ax.set_yticks(list(rows.values()), list(rows))
    ax.set_ylim(-0.7, len(rows) - 0.3)
    n_ok = sum(1 for r in run.recalibrations if r.get("outcome") == "accepted")
    title = (
        f"Timeline: {len(run.detections)} detections, {len(run.recalibrations)} "
        f"recalibrations ({n_ok} accepted)"
    )
    return _save(fig, [ax], path, title, run.time_label)


def _plot_accuracy(run: Run, path: Path) -> Path | None:
    fig, (ax,) = _figure()
    ts, acc = series(run.snapshots, "accuracy")
    drew = False
    if ts:
        ax.plot(ts, acc, color="tab:blue", label="accuracy (recent labels)")
        drew = True
    elif run.segments and any(number(s.get("accuracy")) is not None for s in run.segments):
        for i, seg in enumerate(run.segments):
            a = number(seg.get("accuracy"))
            if a is not None:
                ax.hlines(
                    a,
                    seg["start"],
                    seg["end"],
                    color="tab:blue",
                    linewidth=3,
                    label="segment accuracy" if i == 0 else None,
                )
                ax.text(
                    (seg["start"] + seg["end"]) / 2,
                    a,
                    f"{a:.2f}",
                    ha="center",
                    va="bottom",
                    fontsize="small",
                )
        drew = True
    if not ts:
        pts = [(r["t"], r.get("evaluation") or {}) for r in run.recalibrations]
        serving = [(t, number(e.get("serving"))) for t, e in pts]
        cand = [(t, number(e.get("candidate"))) for t, e in pts]
        serving = [(t, v) for t, v in serving if v is not None]
        cand = [(t, v) for t, v in cand if v is not None]
        if serving:
            ax.scatter(
                *zip(*serving, strict=True),
                marker="s",
                color="tab:gray",
                label="held-out accuracy, serving",
                zorder=3,
            )
            drew = True
        if cand:
            ax.scatter(
                *zip(*cand, strict=True),
                marker="^",
                color="tab:green",
                label="held-out accuracy, candidate",
                zorder=3,
            )
            drew = True
    if not drew:
        return None
    _recal_lines(ax, run)
    ax.set_ylim(-0.02, 1.05)
    ax.set_ylabel("accuracy")
    return _save(fig, [ax], path, "Accuracy", run.time_label)


def _plot_ood(run: Run, path: Path) -> Path | None:
    ts, pv = series(run.snapshots, "ood_p_value")
    if ts:
        fig, (ax,) = _figure()
        ax.plot(ts, pv, color="tab:blue", label="OOD p-value")
        tt, thr = series(run.snapshots, "ood_threshold")
        if tt:
            ax.step(tt, thr, where="post", color="tab:red", label="threshold")
        ax.set_yscale("log")
        ax.set_ylabel("p-value (low = out of distribution)")
        for d in run.detections:
            ax.axvline(d["t"], color="tab:purple", linewidth=0.8, alpha=0.6)
        _recal_lines(ax, run)
        return _save(fig, [ax], path, "OOD score against its threshold", run.time_label)
    stats = [(d["t"], number(d.get("statistic"))) for d in run.detections]
    stats = [(t, v) for t, v in stats if v is not None]
    if not stats:
        return None
    fig, (ax,) = _figure()
    ax.stem([t for t, _ in stats], [v for _, v in stats], label="detector statistic at alarm")
    ax.set_ylabel("CUSUM statistic")
    _recal_lines(ax, run)
    return _save(fig, [ax], path, "Drift detections (no OOD series in this input)", run.time_label)


def _plot_energy(run: Run, path: Path) -> Path | None:
    ti, ei = series(run.snapshots, "energy_inference_j")
    tl, el = series(run.snapshots, "energy_learning_j")
    tp, pw = series(run.snapshots, "power_w")
    if ti or tl:
        fig, axes = _figure(2 if tp else 1)
        ax = axes[0]
        if ti:
            ax.plot(ti, ei, color="tab:blue", label="inference")
        if tl:
            ax.plot(tl, el, color="tab:orange", label="learning")
        ax.set_ylabel("energy since start")
        _si_axis(ax, "J")
        _recal_lines(ax, run)
        if tp:
            axes[1].plot(tp, pw, color="tab:gray", label="power")
            axes[1].set_ylabel("power")
            _si_axis(axes[1], "W")
            _recal_lines(axes[1], run, label=False)
        return _save(fig, axes, path, "Energy: inference vs learning", run.time_label)
    learning = [
        (r["t"], number((r.get("cost") or {}).get("learning_energy_j"))) for r in run.recalibrations
    ]
    learned = [(t, v) for t, v in learning if v is not None]
    if run.segments:
        fig, (ax,) = _figure()
        names = [Path(str(s.get("file", i))).stem for i, s in enumerate(run.segments)]
        inf = [number(s.get("inference_energy_j")) or 0.0 for s in run.segments]
        lrn = [
            sum(
                number((r.get("cost") or {}).get("learning_energy_j")) or 0.0
                for r in s.get("recalibrations") or []
            )
            for s in run.segments
        ]
        xs = list(range(len(names)))
        ax.bar([x - 0.2 for x in xs], inf, width=0.4, color="tab:blue", label="inference")
        ax.bar([x + 0.2 for x in xs], lrn, width=0.4, color="tab:orange", label="learning")
        ax.set_xticks(xs, names)
        ax.set_ylabel("energy (J)")
        if max(inf + lrn) > 0 and min(v for v in inf + lrn if v > 0) < max(inf + lrn) / 100:
            ax.set_yscale("log")
        tot = run.energy_totals
        title = "Energy per segment: inference vs learning"
        if tot:
            title += " (total " + ", ".join(f"{k} {v:.3g} J" for k, v in tot.items()) + ")"
        return _save(fig, [ax], path, title, "segment")
    if not learned:
        return None
    fig, (ax,) = _figure()
    ax.bar(
        [t for t, _ in learned],
        [v for _, v in learned],
        color="tab:orange",
        width=max(1.0, 0.01 * (max(t for t, _ in learned) + 1)),
        label="learning, per recalibration",
    )
    cum, total = [], 0.0
    for _, v in learned:
        total += v
        cum.append(total)
    ax.step(
        [t for t, _ in learned], cum, where="post", color="tab:red", label="learning, cumulative"
    )
    ax.set_ylabel("learning energy (J)")
    _recal_lines(ax, run, label=False)
    return _save(
        fig, [ax], path, "Learning energy (no inference series in this input)", run.time_label
    )


def _plot_density(run: Run, path: Path) -> Path | None:
    layers: dict[str, tuple[list[float], list[float]]] = {}
    for s in run.snapshots:
        dens = s.get("spike_density")
        if not isinstance(dens, dict):
            continue
        for layer, v in dens.items():
            val = number(v)
            if val is not None:
                ts, vs = layers.setdefault(str(layer), ([], []))
                ts.append(s["t"])
                vs.append(val)
    if not layers:
        return None
    fig, (ax,) = _figure()
    for layer, (ts, vs) in sorted(layers.items()):
        ax.plot(ts, vs, label=f"layer {layer}")
    ax.set_ylabel("spikes per neuron per step")
    _recal_lines(ax, run)
    return _save(fig, [ax], path, "Spike density per layer", run.time_label)


def write_report(input: Path, out_dir: Path) -> list[Path]:
    """Draw the plots the input allows into ``out_dir`` (created); their paths, in order:
    timeline, accuracy, OOD, energy, spike density. Raises InputError or DataFormatError
    for an unreadable or unrecognised input."""
    run = load_run(Path(input))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [_plot_timeline(run, out / "timeline.png")]
    for name, draw in (
        ("accuracy.png", _plot_accuracy),
        ("ood.png", _plot_ood),
        ("energy.png", _plot_energy),
        ("spike_density.png", _plot_density),
    ):
        path = draw(run, out / name)
        if path is not None:
            written.append(path)
    return written
