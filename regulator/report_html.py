"""``regulator report --html``: one self-contained HTML page with interactive plots.

Drawn from the same input as the PNG report (:func:`regulator.report_data.load_run`: a state
directory's ``events.jsonl`` or a replay report). Plotly's JavaScript is embedded once,
so the page opens offline, from a mail attachment or a ticket (about 5 MB). Plots, each
only when the input has something for it:

``accuracy``       accuracy over time (snapshots), or per replay segment
``ood``            the OOD p-value against its threshold, log scale, detections marked
``detector``       the drift detector's statistic against its alarm threshold
``events``         detections and recalibrations (by outcome) on one time axis
``energy``         cumulative inference and learning energy, and power, in SI units
``drift``          per input channel and per layer: share of the OOD score at each
                   detection (what moved)

Every time plot marks recalibrations (green accepted, orange rejected or skipped, red
failed) and detections (purple).

>>> import json, tempfile
>>> from pathlib import Path
>>> d = Path(tempfile.mkdtemp())
>>> ev = [{"ts": 0.0, "kind": "snapshot", "fields": {"t_s": 0, "accuracy": 0.9}},
...       {"ts": 10.0, "kind": "snapshot", "fields": {"t_s": 10, "accuracy": 0.5}}]
>>> _ = (d / "events.jsonl").write_text("".join(json.dumps(e) + "\\n" for e in ev))
>>> page = write_html_report(d / "events.jsonl", d / "out" / "report.html")
>>> text = page.read_text()
>>> 'id="plot-accuracy"' in text, "<script src=" in text
(True, False)
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from regulator import atomic
from regulator.report_data import OUTCOME_COLOURS, Run, load_run, number, series

__all__ = ["PLOTS", "write_html_report"]

PLOTS = ("accuracy", "ood", "detector", "events", "energy", "drift")
"""Plot ids, in page order (``id="plot-<name>"``)."""

_COLOURS = {  # matplotlib's tab: colours, as the PNG report draws them
    "tab:green": "#2ca02c",
    "tab:orange": "#ff7f0e",
    "tab:red": "#d62728",
    "tab:gray": "#7f7f7f",
}
_DETECTION = "#9467bd"
_HEIGHT = 380  # px per plot


def _layout(title: str, run: Run, y: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": title},
        "template": "plotly_white",
        "height": _HEIGHT,
        "margin": {"l": 110, "r": 20, "t": 50, "b": 50},
        "xaxis": {"title": {"text": run.time_label or "time"}},
        "yaxis": y,
        "legend": {"orientation": "h", "y": -0.2},
        "shapes": _marks(run),
        **extra,
    }


def _marks(run: Run) -> list[dict[str, Any]]:
    """Vertical lines: recalibrations by outcome (dashed), detections (dotted)."""
    out = []
    for r in run.recalibrations:
        colour = _COLOURS[OUTCOME_COLOURS.get(str(r.get("outcome")), "tab:gray")]
        out.append(_vline(r["t"], colour, "dash"))
    out += [_vline(d["t"], _DETECTION, "dot") for d in run.detections]
    return out


def _vline(t: float, colour: str, dash: str) -> dict[str, Any]:
    return {
        "type": "line",
        "xref": "x",
        "yref": "paper",
        "x0": t,
        "x1": t,
        "y0": 0,
        "y1": 1,
        "line": {"color": colour, "dash": dash, "width": 1.5},
    }


def _line(x: list[float], y: list[float], name: str, **kw: Any) -> dict[str, Any]:
    return {"type": "scatter", "mode": "lines", "x": x, "y": y, "name": name, **kw}


def _accuracy(run: Run) -> dict[str, Any] | None:
    ts, acc = series(run.snapshots, "accuracy")
    if ts:
        data = [_line(ts, acc, "accuracy (recent labels)", line={"color": "#1f77b4"})]
        return {"data": data, "layout": _layout("Accuracy", run, _unit_axis())}
    segs = [(s, number(s.get("accuracy"))) for s in run.segments]
    segs = [(s, a) for s, a in segs if a is not None]
    if not segs:
        return None
    names = [Path(str(s.get("file", i))).name for i, (s, _) in enumerate(segs)]
    data = [{"type": "bar", "x": names, "y": [a for _, a in segs], "name": "accuracy"}]
    layout = _layout("Accuracy per segment", run, _unit_axis(), shapes=[])
    layout["xaxis"] = {"title": {"text": "segment"}}
    return {"data": data, "layout": layout}


def _unit_axis() -> dict[str, Any]:
    return {"title": {"text": "accuracy"}, "range": [0, 1.02], "tickformat": ".0%"}


def _ood(run: Run) -> dict[str, Any] | None:
    ts, pv = series(run.snapshots, "ood_p_value")
    if not ts:
        return None
    data = [_line(ts, pv, "OOD p-value (EWMA)", line={"color": "#1f77b4"})]
    tt, thr = series(run.snapshots, "ood_threshold")
    if tt:
        data.append(_line(tt, thr, "threshold", line={"color": "#d62728", "shape": "hv"}))
    y = {"title": {"text": "p-value (low: out of distribution)"}, "type": "log"}
    return {"data": data, "layout": _layout("OOD p-value against its threshold", run, y)}


def _detector(run: Run) -> dict[str, Any] | None:
    ts, st = series(run.snapshots, "drift_statistic")
    if ts:
        data = [_line(ts, st, "detector statistic", line={"color": "#9467bd"})]
        tt, thr = series(run.snapshots, "drift_threshold")
        if tt:
            data.append(_line(tt, thr, "alarm threshold", line={"color": "#d62728"}))
    else:
        pts = [(d["t"], number(d.get("statistic"))) for d in run.detections]
        pts = [(t, v) for t, v in pts if v is not None]
        if not pts:
            return None
        data = [
            {
                "type": "scatter",
                "mode": "markers",
                "x": [t for t, _ in pts],
                "y": [v for _, v in pts],
                "name": "statistic at detection",
                "marker": {"color": _DETECTION, "size": 10},
            }
        ]
    y = {"title": {"text": "statistic"}, "rangemode": "tozero"}
    return {"data": data, "layout": _layout("Drift detector statistic", run, y)}


def _events(run: Run) -> dict[str, Any] | None:
    if not run.recalibrations and not run.detections:
        return None
    data: list[dict[str, Any]] = []
    if run.detections:
        data.append(_points(run.detections, "drift detection", _DETECTION, 2, "diamond"))
    by_outcome: dict[str, list[dict[str, Any]]] = {}
    for r in run.recalibrations:
        by_outcome.setdefault(str(r.get("outcome", "?")), []).append(r)
    for outcome, recs in sorted(by_outcome.items()):
        colour = _COLOURS[OUTCOME_COLOURS.get(outcome, "tab:gray")]
        data.append(_points(recs, f"recalibration {outcome}", colour, 1, "circle"))
    y = {
        "tickvals": [1, 2],
        "ticktext": ["recalibrations", "detections"],
        "range": [0.5, 2.5],
    }
    return {"data": data, "layout": _layout("Detections and recalibrations", run, y)}


def _points(
    recs: list[dict[str, Any]], name: str, colour: str, row: int, symbol: str
) -> dict[str, Any]:
    text = [
        html.escape(json.dumps({k: v for k, v in r.items() if k != "explanation"}, default=str))
        for r in recs
    ]
    return {
        "type": "scatter",
        "mode": "markers",
        "x": [r["t"] for r in recs],
        "y": [row] * len(recs),
        "name": name,
        "text": text,
        "hoverinfo": "x+text+name",
        "marker": {"color": colour, "size": 12, "symbol": symbol},
    }


def _energy(run: Run) -> dict[str, Any] | None:
    ti, ei = series(run.snapshots, "energy_inference_j")
    tl, el = series(run.snapshots, "energy_learning_j")
    tp, pw = series(run.snapshots, "power_w")
    if not (ti or tl or tp):
        return None
    data = []
    if ti:
        data.append(_line(ti, ei, "inference energy", line={"color": "#1f77b4"}))
    if tl:
        data.append(_line(tl, el, "learning energy", line={"color": "#ff7f0e"}))
    if tp:
        power = _line(tp, pw, "power", line={"color": "#7f7f7f"}, yaxis="y2")
        data.append(power)
    # SI prefixes (mJ, µW) instead of 0.00175 and 1e-5 offsets; both axes start at zero
    # so that a flat power line looks flat.
    si = {"exponentformat": "SI", "tickformat": ".3~s", "rangemode": "tozero"}
    y = {"title": {"text": "energy since start"}, "ticksuffix": "J", **si}
    y2 = {"title": {"text": "power"}, "ticksuffix": "W", "overlaying": "y", "side": "right", **si}
    layout = _layout("Energy and power", run, y, yaxis2=y2)
    layout["margin"]["r"] = 70
    return {"data": data, "layout": layout}


def _drift(run: Run) -> dict[str, Any] | None:
    explained = [d for d in run.detections if isinstance(d.get("explanation"), dict)]
    if not explained:
        return None
    data: list[dict[str, Any]] = []
    for k, d in enumerate(explained):
        ex = d["explanation"]
        chans = [c for c in ex.get("channels") or [] if number(c.get("ood_share")) is not None]
        chans.sort(key=lambda c: int(str(c.get("name")).split("-")[0]))  # input order
        label = f"detection at {d['t']:.4g}"
        data.append(
            {
                "type": "bar",
                "x": [f"input {c['name']}" for c in chans],
                "y": [c["ood_share"] for c in chans],
                "name": label,
                "customdata": [c.get("shift") for c in chans],
                "hovertemplate": "%{x}: %{y:.0%} of the OOD score, shift %{customdata:.2f}"
                + f"<extra>{html.escape(label)}</extra>",
                "legendgroup": str(k),
            }
        )
        layers = ex.get("layers") or []
        data.append(
            {
                "type": "bar",
                "x": [str(la.get("layer")) for la in layers],
                "y": [la.get("ood_share") for la in layers],
                "name": f"{label}: layers",
                "xaxis": "x2",
                "yaxis": "y2",
                "legendgroup": str(k),
                "showlegend": False,
            }
        )
    layout = _layout(
        "What moved at each detection: share of the OOD score",
        run,
        {"title": {"text": "share (inputs)"}, "tickformat": ".0%", "rangemode": "tozero"},
        barmode="group",
        shapes=[],
        xaxis={"domain": [0, 0.78], "title": {"text": "input channel (or group)"}},
        xaxis2={"domain": [0.84, 1], "title": {"text": "hidden layer"}},
        yaxis2={"anchor": "x2", "tickformat": ".0%", "rangemode": "tozero"},
    )
    return {"data": data, "layout": layout}


_BUILDERS = {
    "accuracy": _accuracy,
    "ood": _ood,
    "detector": _detector,
    "events": _events,
    "energy": _energy,
    "drift": _drift,
}

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 16px;
       background: #fff; color: #222; }}
.plot {{ height: {height}px; margin: 0 0 24px 0; }}
p.meta {{ color: #555; }}
</style>
<script>{plotly}</script>
</head><body>
<h1>{title}</h1>
<p class="meta">{meta}</p>
{divs}
<script>
const figures = {figures};
for (const [name, fig] of Object.entries(figures)) {{
  const el = document.getElementById("plot-" + name);
  Plotly.newPlot(el, fig.data, fig.layout, {{responsive: true, displaylogo: false}})
    .then(() => {{
      const r = el.getBoundingClientRect();  // where it landed, for checking the page
      el.dataset.box = [r.left, r.top + window.scrollY, r.width, r.height].map(Math.round);
      el.dataset.rendered = "1";
    }});
}}
</script>
</body></html>
"""


def write_html_report(input: Path, out: Path) -> Path:
    """Write the page for ``input`` (event log or replay report) to ``out``; its path.
    Raises InputError or DataFormatError for an unreadable or unrecognised input."""
    from plotly.offline import get_plotlyjs

    run = load_run(Path(input))
    figures = {name: fig for name in PLOTS if (fig := _BUILDERS[name](run)) is not None}
    source = "replay report" if run.source == "replay" else "event log"
    meta = (
        f"{html.escape(str(input))} ({source}): {len(run.detections)} drift detections, "
        f"{len(run.recalibrations)} recalibrations, {len(run.snapshots)} snapshots."
    )
    divs = "\n".join(f'<div class="plot" id="plot-{name}"></div>' for name in figures)
    page = _PAGE.format(
        title="regulator report",
        height=_HEIGHT,
        plotly=get_plotlyjs(),
        meta=meta,
        divs=divs,
        figures=json.dumps(figures, default=str).replace("</", "<\\/"),
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(out, page.encode("utf-8"))
    return out
