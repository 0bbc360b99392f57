"""The drift explanation of the serving model: a window of what it served, and, at a
detection, which inputs and layers moved (:mod:`regulator.monitor.explain`).

The occlusion forwards run on a copy of the serving chip's noise generator state, so
what is served afterwards is exactly what it would have been without the explanation;
they are host-side diagnostics and are not counted as chip energy.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from regulator.monitor.explain import (
    DriftExplanation,
    channel_groups,
    explain_channels,
    explain_layers,
)
from regulator.monitor.ood import MahalanobisScorer
from regulator.tasks.normalisation import Normaliser

if TYPE_CHECKING:
    from regulator.meta.model import ChipModel, Prediction
    from regulator.monitor.stream import OODMonitor

__all__ = ["MIN_EXPLAINED", "WINDOW", "DriftWindow"]

WINDOW = 32
"""Most samples explained at a detection: the most recent ones."""
MIN_EXPLAINED = 8
"""Fewest: a detection a few samples after the change still averages over this many."""


def _raw_centre(norm: Normaliser) -> np.ndarray | None:
    """The in-distribution centre of each input channel in raw units (None unfitted)."""
    if not norm.fitted or norm.center is None:
        return None
    c = np.asarray(norm.center, dtype=np.float64)
    return np.sign(c) * np.expm1(np.abs(c)) if norm.signed_log else c


class DriftWindow:
    """The last ``size`` inputs ``[C, L]`` served, explained on demand."""

    def __init__(self, size: int = WINDOW) -> None:
        self._x: deque[np.ndarray] = deque(maxlen=size)

    def add(self, *batches: np.ndarray) -> None:
        """Served batches of inputs ``[n, C, L]``, oldest first; only the newest
        ``size`` rows stay, so only the batches that hold them are read."""
        keep = self._x.maxlen
        start, rows = len(batches), 0
        while start > 0 and (keep is None or rows < keep):
            start -= 1
            rows += len(batches[start])
        for x in batches[start:]:
            a = np.asarray(x, dtype=np.float32)
            self._x.extend(a if keep is None else a[-keep:])

    def clear(self) -> None:
        self._x.clear()

    def explain(
        self, model: ChipModel, ood: OODMonitor, sample: int, last: int | None = None
    ) -> DriftExplanation | None:
        """What moved over the window's ``last`` samples (all by default; at least
        :data:`MIN_EXPLAINED`), for the model serving now; None when empty.

        One chip forward of ``(groups + 1) x window`` samples: the window as it is (its
        hidden spike counts give the layer split) and once per occluded input group."""
        if not self._x:
            return None
        keep = len(self._x) if last is None else max(MIN_EXPLAINED, last)
        x = np.stack(list(self._x)[-keep:])
        bundle = model.bundle
        norm = bundle.normaliser
        z = norm.transform(x) if norm.fitted else x.astype(np.float64)
        calibrated = ood.calibrated
        as_served: list[np.ndarray] = []

        def forward(raw: np.ndarray) -> Prediction:
            gen = model.chip.generator
            state = gen.get_state()
            try:
                return model.predict(raw.astype(np.float32))
            finally:
                gen.set_state(state)  # serving goes on with the noise it would have had

        def score(raw: np.ndarray) -> np.ndarray:
            pred = forward(raw)
            as_served.append(pred.hidden_counts[: len(x)])
            return calibrated.score(pred.hidden_counts, pred.outputs)

        centre = _raw_centre(norm)
        channels = explain_channels(x, z, centre, channel_groups(x.shape[1]), score)
        hidden = as_served[0] if as_served else forward(x).hidden_counts
        scorer = calibrated.scorer
        layers, mean_score = [], None
        if isinstance(scorer, MahalanobisScorer):  # readout scorers have no layer split
            sizes = [(f"hidden{k}", n) for k, n in enumerate(bundle.cfg.hidden)]
            terms = scorer.contributions(hidden)
            layers = explain_layers(terms, hidden, scorer.mean, sizes)
            mean_score = float(terms.sum(axis=1).mean())
        return DriftExplanation(sample, len(x), mean_score, tuple(channels), tuple(layers))
