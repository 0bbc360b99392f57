"""`file`: a task family built from a user's labelled recording plus a drift model.

Samples are rows of the file, drawn per class, seen through a simulated ageing of the
sensor: each environment is the state of a random walk after ``drift_steps`` steps
(one step ≈ the drift between two consecutive recording sessions):

- per-feature gain (``f{i}_gain``, ×): a log-normal random walk with step
  ``gain_step``; features in the same group of ``group_size`` (one physical sensor)
  share most of it;
- per-class sensitivity (``class{k}_group{j}_gain``, ×): a log-normal random walk
  with step ``class_gain_step``, per class and feature group, because a sensor's
  response to each analyte ages differently (this part no input re-scaling undoes);
- per-feature offset (``f{i}_offset``, raw feature units): a random walk with step
  ``offset_step`` × the feature's spread;
- feature dropout (``f{i}_alive``, 0 = the feature reads 0, a dead channel);
- white noise (``noise_std``, × each feature's spread).

The drift magnitudes are configured, or fitted from a series of later recordings with
:meth:`FileFamily.fit_drift`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from regulator.errors import ConfigError, InputError
from regulator.tasks.base import Environment, TaskFamily, check_params, register_family
from regulator.tasks.formats import LabelledData, load_file

__all__ = ["FileFamily"]


@register_family
class FileFamily(TaskFamily):
    """Classification over a labelled data file's rows under a simulated drift.

    ``path`` is a CSV, NPZ or gas-drift file (see :mod:`regulator.tasks.formats`).

    >>> import tempfile, os
    >>> from regulator.tasks.formats import save_npz
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "rec.npz")
    >>> save_npz(p, np.arange(12.0).reshape(6, 2, 1), np.array([0, 1, 0, 1, 0, 1]))
    >>> fam = FileFamily(p)
    >>> fam.n_channels, fam.length, fam.n_outputs
    (2, 1, 2)
    >>> fam.sample(fam.nominal_environment(), 4, np.random.default_rng(0))[0].shape
    (4, 2, 1)
    """

    name: ClassVar[str] = "file"
    kind: ClassVar[Literal["classification", "regression"]] = "classification"

    def __init__(
        self,
        path: str,
        format: str | None = None,
        gain_step: float = 0.1,
        class_gain_step: float = 0.1,
        offset_step: float = 0.05,
        group_size: int = 1,
        max_steps: int = 10,
        dropout_probability: float = 0.01,
        noise_std: float = 0.02,
    ) -> None:
        if (
            gain_step < 0
            or class_gain_step < 0
            or offset_step < 0
            or noise_std < 0
            or max_steps < 0
            or group_size < 1
        ):
            raise ConfigError(
                "file family: gain_step, class_gain_step, offset_step, noise_std and "
                "max_steps must be >= 0, group_size >= 1"
            )
        if not 0.0 <= dropout_probability < 1.0:
            raise ConfigError("dropout_probability must lie in [0, 1)")
        self.path = str(path)
        self.format = format
        self.gain_step = float(gain_step)
        self.class_gain_step = float(class_gain_step)
        self.offset_step = float(offset_step)
        self.group_size = int(group_size)
        self.max_steps = int(max_steps)
        self.dropout_probability = float(dropout_probability)
        self.noise_std = float(noise_std)
        data = load_file(Path(self.path), self.format)
        if data.y.dtype != np.int64 or data.y.ndim != 1 or data.y.min() < 0:
            raise ConfigError(f"{self.path}: the file family needs non-negative integer labels")
        self.data = data
        self.n_channels = int(data.x.shape[1])
        self.length = int(data.x.shape[2])
        self.n_outputs = int(data.y.max()) + 1
        self._rows_by_class = [np.flatnonzero(data.y == c) for c in range(self.n_outputs)]
        self.feature_scale = _spread(data.x)

    @property
    def _n_groups(self) -> int:
        return -(-self.n_channels // self.group_size)

    def config(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "gain_step": self.gain_step,
            "class_gain_step": self.class_gain_step,
            "offset_step": self.offset_step,
            "group_size": self.group_size,
            "max_steps": self.max_steps,
            "dropout_probability": self.dropout_probability,
            "noise_std": self.noise_std,
        }

    def nominal_environment(self) -> Environment:
        params: dict[str, float] = {"drift_steps": 0.0, "noise_std": 0.0}
        for i in range(self.n_channels):
            params |= {f"f{i}_gain": 1.0, f"f{i}_offset": 0.0, f"f{i}_alive": 1.0}
        for k in range(self.n_outputs):
            params |= {f"class{k}_group{j}_gain": 1.0 for j in range(self._n_groups)}
        return Environment(family=self.name, params=params, seed=-1)

    def environment_from_seed(self, seed: int) -> Environment:
        rng = np.random.default_rng([seed, 0xF11E])
        steps = int(rng.integers(1, self.max_steps + 1)) if self.max_steps else 0
        root = np.sqrt(steps)  # a walk of `steps` Gaussian steps
        n_groups = self._n_groups
        group_log_gain = rng.normal(0.0, self.gain_step * root, size=n_groups)
        within = 0.3 if self.group_size > 1 else 0.0  # features of one sensor mostly agree
        log_gain = np.repeat(group_log_gain, self.group_size)[: self.n_channels]
        log_gain = log_gain + rng.normal(0.0, within * self.gain_step * root, self.n_channels)
        offset = rng.normal(0.0, self.offset_step * root, self.n_channels) * self.feature_scale
        alive = rng.random(self.n_channels) >= self.dropout_probability * steps
        params: dict[str, float] = {
            "drift_steps": float(steps),
            "noise_std": float(rng.uniform(0.0, self.noise_std)),
        }
        for i in range(self.n_channels):
            params[f"f{i}_gain"] = float(np.exp(log_gain[i]))
            params[f"f{i}_offset"] = float(offset[i])
            params[f"f{i}_alive"] = float(alive[i])
        class_gain = np.exp(
            rng.normal(0.0, self.class_gain_step * root, (self.n_outputs, n_groups))
        )
        for k in range(self.n_outputs):
            for j in range(n_groups):
                params[f"class{k}_group{j}_gain"] = float(class_gain[k, j])
        return Environment(family=self.name, params=params, seed=seed)

    def sample(
        self,
        env: Environment,
        n: int,
        rng: np.random.Generator,
        classes: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        self._check_env(env)
        p = env.params
        c = self.n_channels
        check_params(p, ["noise_std", *(f"f{i}_gain" for i in range(c))])
        y = self._check_classes(n, classes, rng) if classes is not None else None
        if y is None:
            rows = rng.integers(0, len(self.data.y), size=n)
            y = self.data.y[rows]
        else:
            rows = np.empty(n, dtype=np.int64)
            for cls in np.unique(y):
                pool = self._rows_by_class[cls]
                if pool.size == 0:
                    raise InputError(f"{self.path} has no samples of class {cls}")
                mask = y == cls
                rows[mask] = rng.choice(pool, size=int(mask.sum()))
        gain = np.array([p[f"f{i}_gain"] for i in range(c)])
        offset = np.array([p[f"f{i}_offset"] for i in range(c)])
        alive = np.array([p[f"f{i}_alive"] for i in range(c)])
        class_gain = np.array(
            [
                [p.get(f"class{k}_group{j}_gain", 1.0) for j in range(self._n_groups)]
                for k in range(self.n_outputs)
            ]
        )
        feat_class_gain = np.repeat(class_gain, self.group_size, axis=1)[:, :c]  # [K, C]
        gain = gain[None, :] * feat_class_gain[y]  # [n, C]
        x = self.data.x[rows].astype(np.float64)
        x = alive[None, :, None] * (gain[:, :, None] * x + offset[None, :, None])
        noise = rng.standard_normal(x.shape) * (p["noise_std"] * self.feature_scale)[None, :, None]
        return (x + noise).astype(np.float32), y.astype(np.int64)

    @staticmethod
    def fit_drift(sessions: Sequence[LabelledData]) -> dict[str, float]:
        """Drift magnitudes per step, from recordings of consecutive sessions.

        For each pair of consecutive sessions and each class present in both, the
        per-feature change in the class median gives log-gain steps (features whose
        medians keep their sign; the mean over classes is the feature's gain step, the
        rest the class-specific step) and an offset step (× feature spread). Returns
        ``{"gain_step", "class_gain_step", "offset_step"}``, robust standard deviations,
        ready to pass as keyword arguments.
        """
        if len(sessions) < 2:
            raise ConfigError("fit_drift needs at least two sessions")
        feature_steps: list[np.ndarray] = []
        class_steps: list[np.ndarray] = []
        shifts: list[np.ndarray] = []
        for a, b in itertools.pairwise(sessions):
            scale = _spread(a.x)[:, None]
            ratios = []
            for cls in np.intersect1d(a.y, b.y):
                ma = np.median(a.x[a.y == cls], axis=0).ravel()
                mb = np.median(b.x[b.y == cls], axis=0).ravel()
                same = (np.sign(ma) == np.sign(mb)) & (np.abs(ma) > 1e-9) & (np.abs(mb) > 1e-9)
                r = np.full(ma.shape, np.nan)
                r[same] = np.log(np.abs(mb[same]) / np.abs(ma[same]))
                ratios.append(r)
                shifts.append((mb - ma) / scale.ravel())
            lr = np.array(ratios)  # [classes, features]
            per_feature = np.nanmean(lr, axis=0) if np.any(np.isfinite(lr)) else lr[0]
            feature_steps.append(per_feature[np.isfinite(per_feature)])
            resid = lr - per_feature[None, :]
            class_steps.append(resid[np.isfinite(resid)])
        fs, cs, sh = (np.concatenate(v) for v in (feature_steps, class_steps, shifts))
        if fs.size == 0:
            raise ConfigError("fit_drift: no class is present in two consecutive sessions")

        def robust_std(v: np.ndarray) -> float:
            q25, q75 = np.percentile(v, [25, 75])
            return float((q75 - q25) / 1.349)

        return {
            "gain_step": robust_std(fs),
            "class_gain_step": robust_std(cs) if cs.size else 0.0,
            "offset_step": robust_std(sh),
        }


def _spread(x: np.ndarray) -> np.ndarray:
    """Per-channel robust spread (IQR / 1.349) of ``x [n, C, L]``, 1 where flat."""
    flat = np.moveaxis(np.asarray(x, dtype=np.float64), 1, 0).reshape(x.shape[1], -1)
    q25, q75 = np.percentile(flat, [25, 75], axis=1)
    s = (q75 - q25) / 1.349
    return np.where(s > 1e-12, s, 1.0)
