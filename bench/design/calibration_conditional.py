"""The drift detector's false-alarm rate given one calibration set, by its size.

Run: ``python bench/design/calibration_conditional.py [--draws 40] [--samples 100000]``
(writes ``bench/results/calibration_conditional.md``).

The CUSUM threshold is set from ``mean_samples_between_false_alarms`` (ARL0) on the exact
law of conformal p-values with ``n`` calibration scores: uniform on the grid
``1/(n+1) .. 1``. That law is the marginal one, over the calibration draw and the test
sample together. A deployed monitor keeps one calibration set for its whole stream, and
given that set the grid cells' masses are not equal: they are the spacings of the
calibration scores under the true score law, Dirichlet(1, ..., 1). So each deployment has
its own false-alarm rate. This script measures it: for each ``n``, ``--draws``
calibration sets of ``n`` in-control scores (uniform: any continuous law gives the same
ranks), each followed by ``--samples`` in-control scores through the shipped ``cusum``
detector at ARL0 5000 (the default policy's), counting false alarms.

The shipped priors calibrate on 1,000 scores, a recalibrated candidate on the 50-100
scores of the samples since the change point (``bench/results/replay_default.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from regulator.monitor.conformal import ConformalCalibrator
from regulator.monitor.detect import make_detector

OUT = Path(__file__).resolve().parents[1] / "results" / "calibration_conditional.md"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=40, help="calibration sets per size")
    ap.add_argument("--samples", type=int, default=100_000, help="in-control samples each")
    ap.add_argument("--arl0", type=float, default=5000.0)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 300, 1000])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    nominal = a.samples / a.arl0
    rows = []
    for n in a.sizes:
        alarms = []
        for _ in range(a.draws):
            cal = ConformalCalibrator().fit(rng.random(n))
            det = make_detector("cusum", mean_samples_between_false_alarms=a.arl0, n_calibration=n)
            det.update(cal.p_values(rng.random(a.samples)))
            alarms.append(det.n_alarms)
        r = np.asarray(alarms) / nominal
        rows.append(
            f"| {n} | {det.threshold:.2f} | {r.mean():.2f}x | {np.median(r):.2f}x |"
            f" {np.quantile(r, 0.9):.2f}x | {r.min():.2f}x | {r.max():.2f}x |"
        )
        print(rows[-1], flush=True)
    text = "\n".join(
        [
            "# False-alarm rate given one calibration set",
            "",
            f"Command: `python bench/design/calibration_conditional.py --draws {a.draws}"
            f" --samples {a.samples} --seed {a.seed}` · detector `cusum`, configured"
            f" ARL0 {a.arl0:g} · each cell: false alarms over {a.samples:,} in-control"
            f" samples after one calibration set, over the configured {nominal:g}, across"
            f" {a.draws} calibration sets.",
            "",
            "| calibration scores n | threshold h | mean | median | 90th percentile | min | max |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
