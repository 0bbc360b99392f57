"""Rehearsal readout: the readout refitted on the shots beside the prior's source samples.

A prior can carry the labelled samples it was trained on (``rehearsal.x`` raw samples
``[N, C, L]``, ``rehearsal.y`` labels ``[N]``, in its meta tensors; the gas prior holds
batch 1, 445 samples, 228 kB). Adaptation then fits the whole readout, as one softmax
regression, on two kinds of rows:

- the shots: the hidden layer's LI-filtered spike counts (one chip forward, the same
  features the prototype readout uses) and the LI-filtered input lines, both
  standardised on the shots, weighted :data:`SHOT_WEIGHT` each;
- the source samples: their input lines only, each environment normalised on its own
  statistics as episodic training normalises every environment (the source rows on
  theirs, the shots on theirs: a gain or offset common to a batch cancels by
  construction), with the hidden part left at the shots' mean. Their hidden features
  would cost a chip forward each (445 inferences, four times the learning-energy
  budget), and measured through the chip they hurt (``bench/results/learner_design.md``,
  sixth round).

The input lines reach the readout through the network's ``readout_skip`` synapses, so
the fitted model runs on the chip as it is: ``outputs = phi W_h^T + psi W_s^T + c b``.
The fit runs on the host in float (scikit-learn's L-BFGS; ``C`` = 1 and the shots
weighted x20, the settings of the logistic-regression peer, none chosen on a gas batch)
and is written through the chip's write model; the caller counts the writes and the
support forward.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Literal

import numpy as np
import torch

from regulator.meta.model import ModelBundle
from regulator.meta.peers import SHOT_WEIGHT

REHEARSAL_X = "rehearsal.x"
REHEARSAL_Y = "rehearsal.y"
INVERSE_L2 = 1.0
"""scikit-learn's ``C`` (the logistic-regression peer's, not tuned on a gas batch)."""
ABSENT_CLASS_BIAS = -30.0
"""Bias of a class neither the shots nor the source samples hold (never predicted)."""


_SOURCE_LINES: dict[int, dict[int, np.ndarray]] = {}
"""The source rows' input features per stored tensor (by ``id``, dropped with it) and
step count: they depend on neither the shots nor the served weights, so each is
computed once per process."""


def has_rehearsal(bundle: ModelBundle) -> bool:
    """Whether ``bundle`` carries source samples and the skip synapses to use them."""
    return bundle.cfg.readout_skip and REHEARSAL_X in bundle.meta_tensors


def attach_source(bundle: ModelBundle, x: np.ndarray, y: np.ndarray) -> None:
    """Store labelled source samples ``x [N, C, L]``, ``y [N]`` in ``bundle``."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    bundle.meta_tensors[REHEARSAL_X] = torch.from_numpy(np.ascontiguousarray(arr))
    bundle.meta_tensors[REHEARSAL_Y] = torch.as_tensor(np.asarray(y), dtype=torch.long)


def input_features(inp: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``psi [B, n_in]``: encoded input lines ``[T, B, n_in]`` filtered by the LI kernel
    (what the skip synapses contribute to the readout, per unit weight)."""
    return torch.einsum("t,tbi->bi", kernel[: inp.shape[0]], inp)


def source_features(bundle: ModelBundle, n_steps: int, kernel: torch.Tensor) -> np.ndarray:
    """``[N, n_in]`` input features of the source rows over ``n_steps``, each row
    normalised on the source environment's own statistics (cached)."""
    rows = bundle.meta_tensors[REHEARSAL_X]
    if id(rows) not in _SOURCE_LINES:
        _SOURCE_LINES[id(rows)] = {}
        weakref.finalize(rows, _SOURCE_LINES.pop, id(rows), None)
    per_steps = _SOURCE_LINES[id(rows)]
    if n_steps not in per_steps:
        src_x = rows.numpy()
        own = bundle.support_normaliser(src_x)
        with torch.no_grad():
            src_inp = bundle.encode(src_x, n_steps=n_steps, normaliser=own)
            per_steps[n_steps] = input_features(src_inp, kernel).numpy().astype(np.float64)
    return per_steps[n_steps]


def _standardiser(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sd = f.std(0)
    return f.mean(0), np.where(sd > 1e-12, sd, 1.0)


def rehearsal_readout(
    bundle: ModelBundle,
    phi: torch.Tensor,
    inp: torch.Tensor,
    y: torch.Tensor,
    kernel: torch.Tensor,
    source_frame: Literal["own", "shots"] = "own",
    standardise_on: Literal["shots", "pool"] = "shots",
) -> tuple[dict[str, torch.Tensor], int]:
    """Readout weights, bias and skip weights fitted on the shots and the source
    samples, and the solver's iterations.

    ``bundle`` is the clone being adapted (its normaliser already the shots'); ``phi``
    the shots' hidden features ``[B, H]``; ``inp`` their encoded input ``[T, B, n_in]``;
    ``kernel`` the LI kernel. ``source_frame`` and ``standardise_on`` keep the
    alternative measured in the sixth design round (the source rows under the shots'
    normaliser, standardised on the pool of both): the defaults are what ships.
    """
    from sklearn.linear_model import LogisticRegression

    n_out = bundle.cfg.n_outputs
    src_y = bundle.meta_tensors[REHEARSAL_Y].numpy()
    if source_frame == "own":
        psi_src = source_features(bundle, inp.shape[0], kernel)
    else:
        with torch.no_grad():
            src_inp = bundle.encode(bundle.meta_tensors[REHEARSAL_X].numpy(), n_steps=inp.shape[0])
            psi_src = input_features(src_inp, kernel).numpy().astype(np.float64)
    with torch.no_grad():
        psi_shot = input_features(inp, kernel).numpy().astype(np.float64)
    h = phi.detach().numpy().astype(np.float64)
    hm, hsd = _standardiser(h)
    # One frame for both kinds of rows, the shots': the source's input lines under its
    # own normaliser already sit where the shots' sit under theirs.
    pm, psd = _standardiser(
        psi_shot if standardise_on == "shots" else np.concatenate([psi_src, psi_shot])
    )
    n_src, n_hidden = len(psi_src), h.shape[1]
    features = np.concatenate(
        [
            np.concatenate([np.zeros((n_src, n_hidden)), (h - hm) / hsd]),
            (np.concatenate([psi_src, psi_shot]) - pm) / psd,
        ],
        axis=1,
    )
    labels = np.concatenate([src_y, y.numpy()])
    weights = np.concatenate([np.ones(n_src), np.full(len(h), SHOT_WEIGHT)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes: 1000 iterations are plenty
        lr = LogisticRegression(C=INVERSE_L2, max_iter=1000).fit(
            features, labels, sample_weight=weights
        )
    coef = np.asarray(lr.coef_, dtype=np.float64)
    icpt = np.asarray(lr.intercept_, dtype=np.float64)
    classes = np.asarray(lr.classes_, dtype=np.int64)
    if len(classes) == 2:  # scikit-learn's binary form: one row for the second class
        coef = np.stack([-coef[0] / 2, coef[0] / 2])
        icpt = np.array([-icpt[0] / 2, icpt[0] / 2])
    w_std = np.zeros((n_out, features.shape[1]))
    b_std = np.full(n_out, ABSENT_CLASS_BIAS)
    w_std[classes], b_std[classes] = coef, icpt
    # Fold the standardisation into the chip's parameters: z = (f - m) / s.
    scale = np.concatenate([hsd, psd])
    shift = np.concatenate([hm, pm])
    w = w_std / scale
    b = b_std - w @ shift
    dtype = bundle.network.readout.weight.dtype
    params = {
        "readout.weight": torch.as_tensor(w[:, :n_hidden], dtype=dtype),
        "readout_skip.weight": torch.as_tensor(w[:, n_hidden:], dtype=dtype),
        "readout.bias": torch.as_tensor(b / float(kernel.sum()), dtype=dtype),
    }
    return params, int(np.max(lr.n_iter_))
