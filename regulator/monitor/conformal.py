"""Conformal p-values from OOD scores: :class:`ConformalCalibrator` (fitted on held-out
in-distribution scores; ``p = (1 + #{cal >= s}) / (n_cal + 1)``, with an exponential
tail beyond the largest calibration scores) and :class:`CalibratedScorer` (a scorer of
:mod:`regulator.monitor.ood` with its calibration: what a model folder stores)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from regulator.errors import ConfigError, InputError
from regulator.monitor.ood import F64, OODScorer, make_scorer

__all__ = ["TAIL_SCORES", "CalibratedScorer", "ConformalCalibrator"]


TAIL_SCORES = 10
"""Largest calibration scores the exponential tail of :meth:`ConformalCalibrator.
tail_p_values` is fitted on."""


class ConformalCalibrator:
    """Turns scores into conformal p-values against held-out in-distribution scores.

    ``p(s) = (1 + #{cal >= s}) / (n_cal + 1)``: uniform (up to the grid ``1/(n_cal+1)``)
    for in-distribution samples exchangeable with the calibration set.

    >>> cal = ConformalCalibrator().fit([1.0, 2.0, 3.0, 4.0])
    >>> cal.p_values([0.5, 2.5, 9.0]).tolist()
    [1.0, 0.6, 0.2]
    """

    def __init__(self) -> None:
        self._sorted: F64 | None = None
        self._beta: float | None = None  # the tail's scale, from _sorted (see _tail_beta)

    def fit(self, scores: ArrayLike) -> ConformalCalibrator:
        s = np.asarray(scores, dtype=np.float64).ravel()
        if s.size < 1 or not np.all(np.isfinite(s)):
            raise InputError("calibration needs at least one finite score")
        self._sorted = np.sort(s).astype(np.float64)
        self._beta = None
        return self

    @property
    def fitted(self) -> bool:
        return self._sorted is not None

    @property
    def n_calibration(self) -> int:
        return 0 if self._sorted is None else int(self._sorted.size)

    def p_values(self, scores: ArrayLike) -> F64:
        if self._sorted is None:
            raise InputError("calibrator is not fitted; call fit() first")
        s = np.asarray(scores, dtype=np.float64).ravel()
        n = self._sorted.size
        # (1 + #{cal >= s}) / (n + 1), in whole numbers until the one division
        out: F64 = ((n + 1) - np.searchsorted(self._sorted, s, side="left")) / (n + 1.0)
        return out

    def _tail_beta(self) -> float:
        """The exponential tail's scale (0 when there is no tail): the mean excess of
        the top :data:`TAIL_SCORES` scores over the next one, computed once per fit."""
        if self._beta is None:
            assert self._sorted is not None
            cal = self._sorted
            tail = cal.size > TAIL_SCORES
            self._beta = float(np.mean(cal[-TAIL_SCORES:] - cal[-TAIL_SCORES - 1])) if tail else 0.0
        return self._beta

    def tail_p_values(self, scores: ArrayLike, p_values: F64 | None = None) -> F64:
        """:meth:`p_values`, except beyond the largest calibration score, where the grid
        stops at ``1/(n+1)``: there ``p = exp(-(s - max) / beta) / (n + 1)``, an
        exponential tail whose scale ``beta`` is the mean excess of the top
        :data:`TAIL_SCORES` scores over the next one (peaks over threshold). With 100
        calibration scores a far-off sample reads 4e-5 rather than 0.0099, so plots and
        gauges can show it well below a 0.01 threshold. The drift detectors keep the
        exact grid p-values they are calibrated on.

        >>> cal = ConformalCalibrator().fit(np.arange(1.0, 101.0))
        >>> [f"{v:.2g}" for v in cal.p_values([50.0, 100.5, 130.0])]
        ['0.51', '0.0099', '0.0099']
        >>> [f"{v:.2g}" for v in cal.tail_p_values([50.0, 100.5, 130.0])]
        ['0.51', '0.009', '4.2e-05']

        ``p_values``, when given, is what :meth:`p_values` returned for these scores
        (the serving path has them already); it is not modified.
        """
        p = self.p_values(scores) if p_values is None else p_values.copy()
        assert self._sorted is not None
        cal, n = self._sorted, self._sorted.size
        if n <= TAIL_SCORES:
            return p
        beta = self._tail_beta()
        if not beta > 0:
            return p
        s = np.asarray(scores, dtype=np.float64).ravel()
        beyond = s > cal[-1]
        if beyond.any():
            p[beyond] = np.exp(-(s[beyond] - cal[-1]) / beta) / (n + 1.0)
        return p

    def to_dict(self) -> dict[str, Any]:
        return {"scores": None if self._sorted is None else self._sorted.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConformalCalibrator:
        cal = cls()
        if d.get("scores") is not None:
            cal._sorted = np.sort(np.asarray(d["scores"], dtype=np.float64))
            cal._beta = None
        return cal


class CalibratedScorer:
    """A scorer and its conformal calibration: what the model folder stores.

    >>> rng = np.random.default_rng(1)
    >>> cs = CalibratedScorer.fit("mahalanobis", rng.normal(size=(400, 3)),
    ...                           cal_hidden=rng.normal(size=(200, 3)))
    >>> p = cs.p_values(np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]]))
    >>> [round(float(v), 3) for v in p]
    [1.0, 0.005]
    >>> CalibratedScorer.from_dict(cs.to_dict()).p_values([[5.0, 5.0, 5.0]]).tolist() == [p[1]]
    True
    """

    def __init__(self, scorer: OODScorer, calibrator: ConformalCalibrator) -> None:
        if not scorer.fitted or not calibrator.fitted:
            raise ConfigError("CalibratedScorer needs a fitted scorer and calibrator")
        self.scorer = scorer
        self.calibrator = calibrator

    @classmethod
    def fit(
        cls,
        scorer: str | OODScorer,
        hidden: ArrayLike | None,
        readout: ArrayLike | None = None,
        *,
        cal_hidden: ArrayLike | None = None,
        cal_readout: ArrayLike | None = None,
        **scorer_cfg: Any,
    ) -> CalibratedScorer:
        """Fit ``scorer`` on (hidden, readout), calibrate on the held-out (cal_*) samples."""
        sc = make_scorer(scorer, **scorer_cfg) if isinstance(scorer, str) else scorer
        sc.fit(hidden, readout)
        cal = ConformalCalibrator().fit(sc.score(cal_hidden, cal_readout))
        return cls(sc, cal)

    def score(self, hidden: ArrayLike | None, readout: ArrayLike | None = None) -> F64:
        return self.scorer.score(hidden, readout)

    def p_values(self, hidden: ArrayLike | None, readout: ArrayLike | None = None) -> F64:
        return self.calibrator.p_values(self.scorer.score(hidden, readout))

    def to_dict(self) -> dict[str, Any]:
        return {"scorer": self.scorer.to_dict(), "calibration": self.calibrator.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CalibratedScorer:
        return cls(
            OODScorer.from_dict(d["scorer"]), ConformalCalibrator.from_dict(d["calibration"])
        )
