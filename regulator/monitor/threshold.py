"""CUSUM thresholds from the false-alarm rate: the in-control average run length (ARL0)
of a CUSUM with threshold ``h`` by the Markov-chain method of Brook and Evans
(Biometrika 59, 1972), on the exact in-control law of its increments (Beta, probit or
Beta-mixture likelihood ratios of p-values, optionally on the grid of conformal
p-values of ``n`` calibration scores), and the threshold that gives a configured ARL0
(bisection, cached per law)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

from regulator.errors import ConfigError

__all__ = ["average_run_length", "calibrate_threshold", "log_mixture_lr"]


def log_mixture_lr(
    u: NDArray[np.float64], a: tuple[float, ...], w: tuple[float, ...]
) -> NDArray[np.float64]:
    """``log sum_k w_k a_k p^(a_k - 1)`` at ``u = -log p``: the log likelihood ratio of
    the Beta mixture (``u`` is Exp(1) in control)."""
    u = np.asarray(u, dtype=np.float64).reshape(-1, 1)
    aa = np.asarray(a)[None, :]
    terms = np.log(np.asarray(w) * np.asarray(a))[None, :] + (1.0 - aa) * u
    out: NDArray[np.float64] = special.logsumexp(terms, axis=1)
    return out


def _increment_fn(key: tuple[Any, ...]) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
    """The CUSUM increment as a function of the p-value, for the law ``key``."""
    kind = key[0]
    if kind == "beta":
        a = float(key[1])
        return lambda p: math.log(a) - (1.0 - a) * np.log(p)
    if kind == "normal":
        d = float(key[1])
        return lambda p: d * -special.ndtri(np.minimum(p, 1.0 - 1e-16)) - 0.5 * d * d
    if kind == "mixture":
        a_t, w_t = tuple(key[1]), tuple(key[2])
        return lambda p: log_mixture_lr(-np.log(p), a_t, w_t)
    raise ConfigError(f"unknown increment law {kind!r}; valid: beta, normal, mixture")


def _increment_cdf(key: tuple[Any, ...]) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
    """In-control CDF of the CUSUM increment described by ``key``.

    ``("conformal", n, inner)``: the increment of law ``inner`` evaluated at conformal
    p-values of ``n`` calibration scores, uniform on the grid ``k / (n + 1)``.
    """
    kind = key[0]
    if kind == "conformal":
        n = int(key[1])
        grid = np.arange(1, n + 2, dtype=np.float64) / (n + 1)
        vals = np.sort(_increment_fn(key[2])(grid))

        def cdf_grid(x: NDArray[np.float64]) -> NDArray[np.float64]:
            out: NDArray[np.float64] = np.searchsorted(vals, x, side="right") / vals.size
            return out

        return cdf_grid
    if kind == "beta":
        a = float(key[1])
        la = math.log(a)

        def cdf_beta(x: NDArray[np.float64]) -> NDArray[np.float64]:
            y = np.maximum(x - la, 0.0) / (1.0 - a)
            out: NDArray[np.float64] = -np.expm1(-y)
            return out

        return cdf_beta
    if kind == "normal":
        # increment of a Gaussian CUSUM with LLR drift: N(-d^2/2, d^2) in control
        d = float(key[1])

        def cdf_normal(x: NDArray[np.float64]) -> NDArray[np.float64]:
            out: NDArray[np.float64] = special.ndtr((x + 0.5 * d * d) / d)
            return out

        return cdf_normal
    if kind == "mixture":
        # x = log L(p) is increasing in u = -log p ~ Exp(1): F(x) = 1 - exp(-u(x)),
        # u(x) by interpolation on a fine grid (L is nearly log-linear in u at both ends)
        a_t, w_t = tuple(key[1]), tuple(key[2])
        u = np.concatenate((np.linspace(0.0, 20.0, 4001), np.linspace(20.0, 800.0, 2000)[1:]))
        xs = log_mixture_lr(u, a_t, w_t)

        def cdf_mixture(x: NDArray[np.float64]) -> NDArray[np.float64]:
            xx = np.asarray(x, dtype=np.float64)
            uu = np.interp(xx, xs, u, left=-1.0, right=u[-1])
            out: NDArray[np.float64] = np.where(xx < xs[0], 0.0, -np.expm1(-np.maximum(uu, 0.0)))
            return out

        return cdf_mixture
    raise ConfigError(f"unknown increment law {kind!r}; valid: beta, normal, mixture")


def average_run_length(key: tuple[Any, ...], h: float, n_states: int = 300) -> float:
    """In-control ARL of a CUSUM with threshold ``h`` (Brook-Evans Markov chain).

    >>> round(average_run_length(("normal", 1.0), 4.389))
    500
    """
    cdf = _increment_cdf(key)
    w = 2.0 * h / (2 * n_states - 1)
    i = np.arange(n_states, dtype=np.float64)
    diff: NDArray[np.float64] = (i[None, :] - i[:, None]) * w  # target minus source level
    q = cdf(diff + w / 2) - cdf(diff - w / 2)
    q[:, 0] = cdf(np.asarray(w / 2 - i * w, dtype=np.float64))
    arl = np.linalg.solve(np.eye(n_states) - q, np.ones(n_states))
    return float(arl[0])


@functools.lru_cache(maxsize=128)
def calibrate_threshold(key: tuple[Any, ...], arl0: float) -> float:
    """Smallest-error threshold h with in-control ARL equal to ``arl0`` (bisection)."""
    lo, hi = 0.0, 1.0
    while average_run_length(key, hi) < arl0:
        lo, hi = hi, hi * 2.0
        if hi > 1e4:
            raise ConfigError(f"cannot reach mean_samples_between_false_alarms={arl0}")
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if average_run_length(key, mid) < arl0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-6 * hi:
            break
    return 0.5 * (lo + hi)
