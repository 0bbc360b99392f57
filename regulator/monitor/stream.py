"""The streaming OOD monitor: scores, p-values and a calibrated drift test per sample."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from regulator.errors import ConfigError
from regulator.monitor.base import Monitor, check_float
from regulator.monitor.conformal import CalibratedScorer
from regulator.monitor.detect import ChangeDetector, make_detector


def _ewma(prev: float | None, x: np.ndarray, a: float) -> float | None:
    """The EWMA after the values ``x`` in order (the first value seeds it if ``prev`` is
    None), in closed form rather than a Python loop per sample."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        return prev
    if x.size == 1 and prev is not None:  # the streaming case; the same floats as below
        return float((1.0 - a) * prev + a * float(x[0]))
    if prev is None:
        prev, x = float(x[0]), x[1:]
        if x.size == 0:
            return prev
    n = x.size
    return float((1.0 - a) ** n * prev + float(_ewma_weights(a, n) @ x))


_EMPTY = np.zeros(0)
_EMPTY.flags.writeable = False


@functools.lru_cache(maxsize=64)
def _ewma_weights(a: float, n: int) -> np.ndarray:
    """The closed form's weights ``a (1 - a)^(n-1-i)`` (read-only; a served batch's
    three EWMAs share one)."""
    w = a * (1.0 - a) ** np.arange(n - 1, -1, -1, dtype=np.float64)
    w.flags.writeable = False
    return w


class OODMonitor(Monitor):
    """Scores each sample, converts to conformal p-values, and feeds a change detector.

    ``model`` is a fitted :class:`~regulator.monitor.conformal.CalibratedScorer` or its
    ``to_dict()``; ``detector`` names a plug-in of :func:`~regulator.monitor.detect.
    make_detector` configured by ``detector_config`` (for example
    ``{"mean_samples_between_false_alarms": 10000}``).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> model = CalibratedScorer.fit("mahalanobis", rng.normal(size=(500, 4)),
    ...                              cal_hidden=rng.normal(size=(500, 4)))
    >>> m = OODMonitor(model, detector_config={"mean_samples_between_false_alarms": 1000})
    >>> m.update(rng.normal(size=(200, 4)))
    >>> m.drift_detected
    False
    >>> m.update(rng.normal(size=(200, 4)) + 1.5)
    >>> m.drift_detected, m.detector.alarm_indices[:3]
    (True, (201, 204, 206))
    """

    kind = "ood"

    def __init__(
        self,
        model: CalibratedScorer | Mapping[str, Any],
        detector: str = "cusum",
        detector_config: Mapping[str, Any] | None = None,
        alpha: float = 0.01,
    ) -> None:
        if isinstance(model, CalibratedScorer):
            self._model = model
        elif isinstance(model, Mapping):
            try:
                self._model = CalibratedScorer.from_dict(model)
            except (KeyError, TypeError) as exc:
                raise ConfigError(f"model is not a saved CalibratedScorer: {exc}") from exc
        else:
            raise ConfigError("model must be a CalibratedScorer or its to_dict()")
        self._model_dict = self._model.to_dict()
        self._det_name = detector
        # The detector's threshold is calibrated on the exact law of these conformal
        # p-values (uniform on the grid 1/(n+1) .. 1) unless the caller says otherwise.
        self._det_cfg = {
            "n_calibration": self._model.calibrator.n_calibration,
            **dict(detector_config or {}),
        }
        self._detector: ChangeDetector = make_detector(detector, **self._det_cfg)
        self._alpha = check_float("alpha", alpha, low=0.0, high=1.0, low_open=True)
        self.reset()

    def reset(self) -> None:
        self._detector.reset()
        # the last batch's, as arrays (a block of a few hundred samples: no per-sample
        # Python floats on the serving path)
        self._scores: np.ndarray = _EMPTY
        self._p: np.ndarray = _EMPTY
        self._p_tail: np.ndarray = _EMPTY
        self._ewma_score: float | None = None
        self._ewma_p: float | None = None
        self._ewma_p_tail: float | None = None
        self._n = 0

    def update(self, hidden: ArrayLike | None, readout: ArrayLike | None = None) -> None:
        """Consume a batch: hidden spike counts ``[n, H]`` and optionally readout ``[n, K]``."""
        scores = self._model.score(hidden, readout)
        cal = self._model.calibrator
        p = cal.p_values(scores)
        self._detector.update(p)
        p_tail = cal.tail_p_values(scores, p)
        self._scores = np.asarray(scores, dtype=np.float64)
        self._p = np.asarray(p, dtype=np.float64)
        self._p_tail = np.asarray(p_tail, dtype=np.float64)
        self._ewma_score = _ewma(self._ewma_score, scores, self._alpha)
        self._ewma_p = _ewma(self._ewma_p, p, self._alpha)
        self._ewma_p_tail = _ewma(self._ewma_p_tail, p_tail, self._alpha)
        self._n += len(self._scores)

    # results

    @property
    def scores(self) -> tuple[float, ...]:
        """Scores of the last batch."""
        return tuple(self._scores.tolist())

    @property
    def p_values(self) -> tuple[float, ...]:
        """Conformal p-values of the last batch."""
        return tuple(self._p.tolist())

    @property
    def p_value_array(self) -> np.ndarray:
        """:attr:`p_values` as a read-only array ``[n]`` (no copy)."""
        out = self._p.view()
        out.flags.writeable = False
        return out

    @property
    def tail_p_values(self) -> tuple[float, ...]:
        """The last batch's p-values with an exponential tail below the calibration
        grid's floor (for display; the detector reads :attr:`p_values`)."""
        return tuple(self._p_tail.tolist())

    @property
    def mean_tail_p_value(self) -> float | None:
        """EWMA of :attr:`tail_p_values`."""
        return self._ewma_p_tail

    @property
    def score(self) -> float | None:
        """Score of the most recent sample."""
        return float(self._scores[-1]) if len(self._scores) else None

    @property
    def mean_score(self) -> float | None:
        """EWMA of the score (weight ``alpha`` per sample)."""
        return self._ewma_score

    @property
    def mean_p_value(self) -> float | None:
        """EWMA of the p-values (about 0.5 in distribution)."""
        return self._ewma_p

    @property
    def drift_detected(self) -> bool:
        return self._detector.drift_detected

    @property
    def alarm_index(self) -> int | None:
        return self._detector.alarm_index

    @property
    def n_alarms(self) -> int:
        return self._detector.n_alarms

    @property
    def statistic(self) -> float:
        return self._detector.statistic

    @property
    def n_seen(self) -> int:
        return self._n

    @property
    def detector(self) -> ChangeDetector:
        return self._detector

    @property
    def calibrated(self) -> CalibratedScorer:
        """The fitted scorer and its conformal calibration (read-only use)."""
        return self._model

    @property
    def config(self) -> dict[str, Any]:
        return {
            "model": self._model_dict,
            "detector": self._det_name,
            "detector_config": dict(self._detector.config),
            "alpha": self._alpha,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "mean_score": self.mean_score,
            "mean_p_value": self.mean_p_value,
            "mean_tail_p_value": self.mean_tail_p_value,
            "n_seen": self.n_seen,
            "detector": self._detector.summary(),
        }

    def _get_state(self) -> dict[str, Any]:
        return {
            "detector": self._detector.state_dict(),
            "scores": self._scores.tolist(),
            "p": self._p.tolist(),
            "p_tail": self._p_tail.tolist(),
            "ewma_score": self._ewma_score,
            "ewma_p": self._ewma_p,
            "ewma_p_tail": self._ewma_p_tail,
            "n": self._n,
        }

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._detector.load_state_dict(state["detector"])
        self._scores = np.asarray([float(v) for v in state["scores"]], dtype=np.float64)
        self._p = np.asarray([float(v) for v in state["p"]], dtype=np.float64)
        self._ewma_score = None if state["ewma_score"] is None else float(state["ewma_score"])
        self._ewma_p = None if state["ewma_p"] is None else float(state["ewma_p"])
        # states saved before the tail p-values existed restore without them
        self._p_tail = np.asarray(
            [float(v) for v in state.get("p_tail", state["p"])], dtype=np.float64
        )
        tail = state.get("ewma_p_tail", state["ewma_p"])
        self._ewma_p_tail = None if tail is None else float(tail)
        self._n = int(state["n"])
