"""``regulator report --html``: one self-contained page whose plots render in a real
headless browser (Debian's chromium): the test reads where each plot landed from the
rendered DOM and looks at a screenshot for the plots' coloured marks there."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from regulator.report_html import PLOTS, write_html_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (scripts/setup.sh --test installs it)"
)
WINDOW = (1280, 2900)


def _events(path: Path) -> Path:
    """A run: 60 snapshots 10 s apart, a shift at 300 s on input 3, detected at 305 s and
    recalibrated at 405 s."""
    ev: list[dict[str, Any]] = []
    for i in range(60):
        shifted = 30 <= i <= 40
        fields = {
            "t_s": 10.0 * i,
            "accuracy": 0.45 if shifted else 0.9,
            "ood_p_value": 0.002 if shifted else 0.5,
            "ood_threshold": 0.01,
            "drift_statistic": min(9.0, 1.5 * (i - 29)) if i >= 30 else 0.2,
            "drift_threshold": 6.0,
            "power_w": 1.2e-5,
            "energy_inference_j": 1.75e-3 * i,
            "energy_learning_j": 2e-4 if i > 40 else 0.0,
        }
        ev.append({"ts": 1.8e9 + 10.0 * i, "kind": "snapshot", "fields": fields})
    channels = [
        {"name": str(c), "shift": 4.0 if c == 3 else 0.1, "ood_share": 0.8 if c == 3 else 0.2 / 7}
        for c in range(8)
    ]
    explanation = {
        "sample": 610,
        "window": 12,
        "mean_score": 40.0,
        "channels": channels,
        "layers": [{"layer": "hidden0", "ood_share": 1.0, "spike_change": 0.3}],
    }
    ev.append(
        {
            "ts": 1.8e9 + 305,
            "kind": "detection",
            "fields": {"t_s": 305.0, "statistic": 6.5, "explanation": explanation},
        }
    )
    ev.append(
        {
            "ts": 1.8e9 + 405,
            "kind": "recalibration",
            "fields": {"t_s": 405.0, "outcome": "accepted", "trigger": "drift"},
        }
    )
    path.write_text("".join(json.dumps(e) + "\n" for e in ev))
    return path


def _chromium(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # as root in CI; the page is our own file
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            "--virtual-time-budget=20000",  # let the page's scripts run first
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _boxes(page: Path) -> dict[str, tuple[int, int, int, int]]:
    """Each rendered plot's box (left, top, width, height) in CSS pixels, from the DOM."""
    dom = _chromium(page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    boxes = {}
    for tag in re.findall(r"<div[^>]*class=\"plot[^\"]*\"[^>]*>", dom.stdout):
        name = re.search(r'id="plot-(\w+)"', tag)
        box = re.search(r'data-box="([\d,.-]+)"', tag)
        if name and box and 'data-rendered="1"' in tag:
            left, top, width, height = (int(float(v)) for v in box.group(1).split(","))
            boxes[name.group(1)] = (left, top, width, height)
    return boxes


def _coloured(img: Image.Image, box: tuple[int, int, int, int]) -> float:
    """The fraction of strongly coloured pixels (lines, bars, markers; not the white
    background, the grey grid or black text) inside ``box``."""
    left, top, width, height = box
    region = np.asarray(img.crop((left, top, left + width, top + height)).convert("RGB"))
    spread = region.max(axis=2).astype(int) - region.min(axis=2).astype(int)
    return float((spread > 80).mean()) if spread.size else 0.0


def test_page_is_self_contained(tmp_path: Path) -> None:
    page = write_html_report(_events(tmp_path / "events.jsonl"), tmp_path / "out" / "r.html")
    text = page.read_text()
    assert "<script src=" not in text and "<link" not in text  # nothing fetched
    assert "Plotly.newPlot" in text and text.count("<script>") == 2  # plotly.js, then ours
    assert [m for m in re.findall(r'id="plot-(\w+)"', text)] == list(PLOTS)
    assert 3e6 < page.stat().st_size < 8e6  # plotly.js embedded once (~4.8 MB)


def test_cli_writes_the_page(tmp_path: Path) -> None:
    events = _events(tmp_path / "events.jsonl")
    res = subprocess.run(
        [sys.executable, "-m", "regulator.cli", "report", str(events), "--out",
         str(tmp_path / "o"), "--html"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(tmp_path / "o" / "report.html")
    bad = subprocess.run(
        [sys.executable, "-m", "regulator.cli", "report", str(tmp_path / "nope.jsonl"),
         "--out", str(tmp_path / "o"), "--html"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "cannot read" in bad.stderr


@needs_chromium
def test_plots_render_in_a_headless_browser(tmp_path: Path) -> None:
    page = write_html_report(_events(tmp_path / "events.jsonl"), tmp_path / "report.html")
    boxes = _boxes(page)
    assert set(boxes) == set(PLOTS), f"rendered: {sorted(boxes)}"
    shot = tmp_path / "shot.png"
    res = _chromium(page, f"--screenshot={shot}")
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    img = Image.open(shot)
    assert img.size == WINDOW
    for name, box in boxes.items():
        assert box[1] + box[3] <= WINDOW[1], f"{name} is below the screenshot"
        # lines, bars and markers were drawn there (the events plot has only a few marks)
        assert _coloured(img, box) > (0.001 if name == "events" else 0.004), name
    title = (0, 0, WINDOW[0], min(b[1] for b in boxes.values()))
    assert _coloured(img, (*title[:2], title[2], title[3] - title[1])) < 0.001


@needs_chromium
def test_a_page_without_its_script_shows_nothing(tmp_path: Path) -> None:
    """The check above can fail: the same page with plotly.js removed draws no plot."""
    page = write_html_report(_events(tmp_path / "events.jsonl"), tmp_path / "report.html")
    text = page.read_text()
    start = text.index("<script>")
    broken = text[:start] + text[text.index("</script>", start) + len("</script>") :]
    page.write_text(broken)
    assert _boxes(page) == {}
    shot = tmp_path / "shot.png"
    assert _chromium(page, f"--screenshot={shot}").returncode == 0
    img = Image.open(shot)
    assert _coloured(img, (0, 100, WINDOW[0], WINDOW[1] - 100)) < 0.0005
