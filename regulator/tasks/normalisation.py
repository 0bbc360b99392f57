"""Per-channel input normalisation, stored with a model and re-fittable without labels.

Label-free recalibration re-fits the normaliser on recent unlabelled samples: if the
drift is mostly a per-channel gain and offset, that alone undoes much of it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from regulator.errors import ConfigError, InputError

__all__ = ["FEATURE_EPS", "Normaliser", "signed_log"]

FEATURE_EPS = 0.05
"""Added to a feature's spread (method "feature"): a few shots of a near-constant
feature must not blow its noise up."""

Method = Literal["standard", "robust", "feature", "none"]
_METHODS = ("none", "robust", "standard", "feature")


def signed_log(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)``: compresses features spanning decades, keeps the sign.

    >>> signed_log(np.array([-9.0, 0.0, 99.0])).round(3).tolist()
    [-2.303, 0.0, 4.605]
    """
    return np.sign(x) * np.log1p(np.abs(x))


class Normaliser:
    """Per-channel centre and scale of ``[n, C, L]`` samples (statistics over n and L).

    ``method``: "standard" (mean / std), "robust" (median / IQR/1.349, so a Gaussian
    channel gets scale ≈ std), "feature" (mean / std of every (channel, time point)
    over the samples, plus ``FEATURE_EPS``: what episodic training and few-shot
    re-normalisation use, since a response's shape over time is per-feature), or "none".
    ``signed_log`` first applies :func:`signed_log`. Channels with zero spread get scale 1.

    >>> x = np.array([[[1.0, 3.0]], [[5.0, 7.0]]], dtype=np.float32)  # [n=2, C=1, L=2]
    >>> norm = Normaliser("standard").fit(x)
    >>> norm.transform(x).astype(float).round(3).ravel().tolist()
    [-1.342, -0.447, 0.447, 1.342]
    >>> Normaliser.from_dict(norm.to_dict()).transform(x).shape
    (2, 1, 2)
    """

    def __init__(self, method: Method = "robust", signed_log: bool = False) -> None:
        if method not in _METHODS:
            raise ConfigError(f"unknown normalisation {method!r}; valid: {', '.join(_METHODS)}")
        self.method: Method = method
        self.signed_log = signed_log
        self.center: np.ndarray | None = None
        self.scale: np.ndarray | None = None

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`from_dict`) has set the statistics."""
        return self.center is not None

    def _pre(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 3:
            raise InputError(f"expected samples shaped [n, C, L], got {x.shape}")
        return signed_log(x) if self.signed_log else x

    def fit(self, x: np.ndarray) -> Normaliser:
        """Set per-channel statistics from ``x [n, C, L]`` (labels never needed)."""
        z = self._pre(x)
        if z.shape[0] == 0:
            raise InputError("cannot fit a normaliser on zero samples")
        if self.method == "feature":
            self.center = z.mean(axis=0)
            self.scale = z.std(axis=0) + FEATURE_EPS
            return self
        flat = np.moveaxis(z, 1, 0).reshape(z.shape[1], -1)  # [C, n*L]
        if self.method == "standard":
            center, scale = flat.mean(axis=1), flat.std(axis=1)
        elif self.method == "robust":
            q25, q50, q75 = np.percentile(flat, [25, 50, 75], axis=1)
            center, scale = q50, (q75 - q25) / 1.349
        else:
            center, scale = np.zeros(z.shape[1]), np.ones(z.shape[1])
        scale = np.where(scale > 1e-12, scale, 1.0)
        self.center, self.scale = center, scale
        return self

    def refit(self, x: np.ndarray, weight: float = 1.0) -> Normaliser:
        """Label-free recalibration: blend statistics fitted on recent ``x`` in.

        ``weight`` 1 replaces the old statistics; smaller values move part way.
        """
        if not 0.0 < weight <= 1.0:
            raise ConfigError(f"weight must lie in (0, 1], got {weight}")
        old_c, old_s = self.center, self.scale
        self.fit(x)
        if old_c is not None and old_s is not None and weight < 1.0:
            assert self.center is not None and self.scale is not None
            self.center = (1 - weight) * old_c + weight * self.center
            self.scale = (1 - weight) * old_s + weight * self.scale
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(f(x) - center) / scale`` per channel, float32, same shape as ``x``."""
        if self.center is None or self.scale is None:
            raise InputError("normaliser used before fit()")
        z = self._pre(x)
        if self.center.ndim == 2:
            if z.shape[1:] != self.center.shape:
                raise InputError(
                    f"expected samples [n, {self.center.shape[0]}, {self.center.shape[1]}], "
                    f"got {list(z.shape)}"
                )
            return ((z - self.center[None]) / self.scale[None]).astype(np.float32)
        if z.shape[1] != self.center.size:
            raise InputError(f"expected {self.center.size} channels, got {z.shape[1]}")
        return ((z - self.center[None, :, None]) / self.scale[None, :, None]).astype(np.float32)

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        """:meth:`fit` then :meth:`transform`."""
        return self.fit(x).transform(x)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state, for the model folder."""
        return {
            "method": self.method,
            "signed_log": self.signed_log,
            "center": None if self.center is None else self.center.tolist(),
            "scale": None if self.scale is None else self.scale.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normaliser:
        """Rebuild from :meth:`to_dict` output; bad content raises ConfigError."""
        try:
            norm = cls(data["method"], bool(data["signed_log"]))
            if data["center"] is not None:
                center = np.asarray(data["center"], dtype=np.float64)
                scale = np.asarray(data["scale"], dtype=np.float64)
                if center.ndim not in (1, 2) or center.shape != scale.shape or np.any(scale <= 0):
                    raise ValueError("center and scale must be equal-shaped, scale > 0")
                norm.center, norm.scale = center, scale
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"bad normaliser state: {exc}") from exc
        return norm
