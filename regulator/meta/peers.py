"""The peers a skeptic runs first, scored on the same shots and query samples as the prior.

Every few-shot result of the prior sits beside these, computed in the same run (never
constants):

- ``lr_scratch``: scikit-learn logistic regression (C=1) on the K shots alone, inputs
  flattened and standardised on the shots;
- ``lr_source``: logistic regression fitted on the source data (pooled training
  environments, or gas batch 1) plus the shots, the shots weighted ``SHOT_WEIGHT``;
- ``ncm``: nearest class mean on inputs standardised on the shots;
- ``mlp_source``: a dense MLP trained on the source data, then fine-tuned on the shots
  mixed with source samples (shots weighted ``SHOT_WEIGHT``);
- ``mlp_renorm``: a dense MLP trained on the source data with each environment
  standardised on its own samples, re-standardised on the shots at test, then every
  weight fine-tuned on the shots. This is the strongest dense peer: the same
  episodic normalisation the prior uses, without the chip.

Inputs are raw samples ``[n, C, L]``; ``signed_log`` applies ``sign(x) log1p(|x|)``
first (the gas-drift features span decades). Labels used by each peer: the K shots
per class, plus the source data where the name says so.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from regulator.tasks.normalisation import signed_log as _signed_log

PeerName = Literal["lr_scratch", "lr_source", "ncm", "mlp_source", "mlp_renorm"]
PEER_NAMES: tuple[PeerName, ...] = ("lr_scratch", "lr_source", "ncm", "mlp_source", "mlp_renorm")
PEER_LABELS: dict[str, str] = {
    "lr_scratch": "logistic regression, shots only",
    "lr_source": "logistic regression, source data + shots",
    "ncm": "nearest class mean, standardised on the shots",
    "mlp_source": "dense MLP, source data + shots",
    "mlp_renorm": "dense MLP, per-environment normalised, re-normalised + fine-tuned",
}
SOURCE_PEERS = frozenset({"lr_source", "mlp_source", "mlp_renorm"})
"""The peers that also learn from the source data's labels."""
SHOT_WEIGHT = 20.0
"""How much more a shot weighs than a source sample in the ``*_source`` peers."""

MLP_HIDDEN = 64


def _features(x: np.ndarray, signed_log: bool) -> np.ndarray:
    f = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return _signed_log(f) if signed_log else f


def _standardiser(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread per feature, as scikit-learn's StandardScaler (spread 0 -> 1)."""
    sd = f.std(0)
    return f.mean(0), np.where(sd > 1e-12, sd, 1.0)


def _mlp(n_in: int, n_out: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, MLP_HIDDEN), nn.ReLU(), nn.Linear(MLP_HIDDEN, n_out))


def _train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor | None,
    steps: int,
    lr: float,
    batch: int,
    seed: int,
) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(batch, len(x)),), generator=gen)
        opt.zero_grad()
        per = nn.functional.cross_entropy(model(x[idx]), y[idx], reduction="none")
        loss = (per * w[idx]).sum() / w[idx].sum() if w is not None else per.mean()
        loss.backward()
        opt.step()


def _acc(pred: np.ndarray, y: np.ndarray) -> float:
    return float((np.asarray(pred) == np.asarray(y)).mean())


@dataclass
class SourceData:
    """Labelled source samples, grouped by environment (one group for gas batch 1)."""

    groups: list[tuple[np.ndarray, np.ndarray]]
    n_classes: int
    signed_log: bool = False

    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        """All features ``[n, D]`` (signed-log applied) and labels."""
        f = np.concatenate([_features(x, self.signed_log) for x, _ in self.groups])
        return f, np.concatenate([y for _, y in self.groups])


@dataclass
class Peers:
    """The peers fitted once on the source data; :meth:`score` runs them on a task.

    >>> rng = np.random.default_rng(0)
    >>> def draw(n):
    ...     y = rng.integers(0, 2, n)
    ...     return (y[:, None, None] + 0.3 * rng.standard_normal((n, 3, 1))), y
    >>> peers = Peers.fit(SourceData([draw(200)], n_classes=2), seed=0)
    >>> sx, sy = draw(10); qx, qy = draw(50)
    >>> scores = peers.score(sx, sy, qx, qy)
    >>> sorted(scores) == sorted(PEER_NAMES), all(v > 0.9 for v in scores.values())
    (True, True)
    """

    source: SourceData
    seed: int = 0
    finetune_steps: int = 30
    _lr_source: object = field(default=None, repr=False)
    _src_f: np.ndarray | None = field(default=None, repr=False)
    _src_y: np.ndarray | None = field(default=None, repr=False)
    _mlp_src: nn.Module | None = field(default=None, repr=False)
    _mlp_src_norm: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    _mlp_env: nn.Module | None = field(default=None, repr=False)

    @classmethod
    def fit(cls, source: SourceData, seed: int = 0, train_steps: int = 1500) -> Peers:
        """Train the source models: logistic regression, the MLP on pooled standardised
        source data, and the MLP on per-environment standardised source data."""
        from sklearn.linear_model import LogisticRegression

        p = cls(source, seed)
        f, y = source.pooled()
        p._src_f, p._src_y = f, y
        mu, sd = _standardiser(f)
        p._mlp_src_norm = (mu, sd)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p._lr_source = LogisticRegression(C=1.0, max_iter=300).fit((f - mu) / sd, y)
        xt = torch.from_numpy(((f - mu) / sd).astype(np.float32))
        yt = torch.as_tensor(y, dtype=torch.long)
        p._mlp_src = _mlp(f.shape[1], source.n_classes, seed)
        _train(p._mlp_src, xt, yt, None, train_steps, 3e-3, 128, seed)
        per_env = []
        for gx, _ in source.groups:
            g = _features(gx, source.signed_log)
            gm, gs = _standardiser(g)
            per_env.append((g - gm) / gs)
        xe = torch.from_numpy(np.concatenate(per_env).astype(np.float32))
        p._mlp_env = _mlp(f.shape[1], source.n_classes, seed + 1)
        _train(p._mlp_env, xe, yt, None, train_steps, 3e-3, 128, seed + 1)
        return p

    @property
    def n_source(self) -> int:
        """Labelled source samples the source peers learned from."""
        return sum(len(y) for _, y in self.source.groups)

    def score(
        self, sx: np.ndarray, sy: np.ndarray, qx: np.ndarray, qy: np.ndarray
    ) -> dict[str, float]:
        """Accuracy of every peer on the query samples after seeing the shots."""
        from sklearn.linear_model import LogisticRegression

        sl = self.source.signed_log
        fs, fq = _features(sx, sl), _features(qx, sl)
        sy, qy = np.asarray(sy), np.asarray(qy)
        out: dict[str, float] = {}
        mu, sd = _standardiser(fs)
        zs, zq = (fs - mu) / sd, (fq - mu) / sd
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if len(np.unique(sy)) > 1:
                lr = LogisticRegression(C=1.0, max_iter=1000).fit(zs, sy)
                out["lr_scratch"] = _acc(lr.predict(zq), qy)
            else:
                out["lr_scratch"] = _acc(np.full(len(qy), sy[0]), qy)
            assert self._src_f is not None and self._src_y is not None
            assert self._mlp_src_norm is not None
            f_all = np.concatenate([self._src_f, fs])
            y_all = np.concatenate([self._src_y, sy])
            w_all = np.concatenate([np.ones(len(self._src_f)), np.full(len(fs), SHOT_WEIGHT)])
            am, asd = _standardiser(f_all)
            if set(np.unique(y_all)) == set(self._lr_source.classes_):  # type: ignore[attr-defined]
                lr_s = copy.deepcopy(self._lr_source)
                lr_s.set_params(warm_start=True, max_iter=200)  # type: ignore[attr-defined]
            else:  # the shots hold a class the source does not: no warm start
                lr_s = LogisticRegression(C=1.0, max_iter=300)
            lr_s.fit((f_all - am) / asd, y_all, sample_weight=w_all)  # type: ignore[attr-defined]
            out["lr_source"] = _acc(lr_s.predict((fq - am) / asd), qy)  # type: ignore[attr-defined]
        classes = np.unique(sy)
        means = np.stack([zs[sy == c].mean(0) for c in classes])
        d = ((zq[:, None, :] - means[None]) ** 2).sum(-1)
        out["ncm"] = _acc(classes[d.argmin(1)], qy)
        out["mlp_source"] = self._mlp_source_acc(fs, sy, fq, qy)
        out["mlp_renorm"] = self._mlp_renorm_acc(zs, sy, zq, qy)
        return out

    def _mlp_source_acc(
        self, fs: np.ndarray, sy: np.ndarray, fq: np.ndarray, qy: np.ndarray
    ) -> float:
        assert self._mlp_src is not None and self._mlp_src_norm is not None
        assert self._src_f is not None and self._src_y is not None
        mu, sd = self._mlp_src_norm
        m = copy.deepcopy(self._mlp_src)
        x = torch.from_numpy(((np.concatenate([self._src_f, fs]) - mu) / sd).astype(np.float32))
        y = torch.as_tensor(np.concatenate([self._src_y, sy]), dtype=torch.long)
        w = torch.cat([torch.ones(len(self._src_f)), torch.full((len(fs),), SHOT_WEIGHT)])
        _train(m, x, y, w, self.finetune_steps, 1e-3, 512, self.seed)
        with torch.no_grad():
            pred = m(torch.from_numpy(((fq - mu) / sd).astype(np.float32))).argmax(1).numpy()
        return _acc(pred, qy)

    def _mlp_renorm_acc(
        self, zs: np.ndarray, sy: np.ndarray, zq: np.ndarray, qy: np.ndarray
    ) -> float:
        assert self._mlp_env is not None
        m = copy.deepcopy(self._mlp_env)
        x = torch.from_numpy(zs.astype(np.float32))
        y = torch.as_tensor(sy, dtype=torch.long)
        _train(m, x, y, None, self.finetune_steps, 1e-3, len(x), self.seed)
        with torch.no_grad():
            pred = m(torch.from_numpy(zq.astype(np.float32))).argmax(1).numpy()
        return _acc(pred, qy)
