"""The compute threads of a service process: one for torch and one for numpy's BLAS.

The daemon serves on one core and recalibrates in a worker process on another
(:mod:`regulator.service.executor`); each process pins its own compute to one thread.
BLAS counts as much as torch: left at one thread per core, OpenBLAS wakes a second
thread for the monitors' small products (a block's ``[n, H] @ [H, H]``) and hands the
work across cores on the serving path; at batch 64 the OOD score of a block took about
twice as long (``bench/results/daemon.md``, session 7).
"""

from __future__ import annotations

import os

import threadpoolctl
import torch

__all__ = ["pin_threads"]

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""Read by OpenMP and BLAS libraries when they load: a library loaded after
:func:`pin_threads` (SciPy's and scikit-learn's own OpenBLAS and libgomp come with their
first import, often inside a job) would otherwise start with one thread per core, out of
reach of the limits set on the libraries loaded before."""


def pin_threads() -> None:
    """One compute thread for torch, BLAS and OpenMP in this process, from now on: the
    libraries loaded already are limited now, those loaded later by the environment
    (inherited by this process's children too)."""
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"
    torch.set_num_threads(1)
    threadpoolctl.threadpool_limits(1, user_api="blas")
    threadpoolctl.threadpool_limits(1, user_api="openmp")
