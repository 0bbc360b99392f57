"""Monitors: spike density, energy and power, OOD scores, calibrated drift detection,
accuracy from delayed labels. Pure numpy; no threads, I/O or metrics (DESIGN.md §2)."""

from regulator.monitor.accuracy import AccuracyMonitor
from regulator.monitor.base import Monitor
from regulator.monitor.conformal import CalibratedScorer, ConformalCalibrator
from regulator.monitor.density import SpikeDensityMonitor
from regulator.monitor.detect import (
    DETECTORS,
    BetaCusum,
    ChangeDetector,
    CusumDetector,
    ProbitCusum,
    average_run_length,
    make_detector,
)
from regulator.monitor.energy import EnergyMonitor
from regulator.monitor.ood import (
    SCORERS,
    EnergyScorer,
    MahalanobisScorer,
    MaxSoftmaxScorer,
    OODScorer,
    make_scorer,
)
from regulator.monitor.stream import OODMonitor

__all__ = [
    "DETECTORS",
    "SCORERS",
    "AccuracyMonitor",
    "BetaCusum",
    "CalibratedScorer",
    "ChangeDetector",
    "ConformalCalibrator",
    "CusumDetector",
    "EnergyMonitor",
    "EnergyScorer",
    "MahalanobisScorer",
    "MaxSoftmaxScorer",
    "Monitor",
    "OODMonitor",
    "OODScorer",
    "ProbitCusum",
    "SpikeDensityMonitor",
    "average_run_length",
    "make_detector",
    "make_scorer",
]
