"""The compute threads of a service process: one for torch and one for numpy's BLAS.

The daemon serves on one core and recalibrates in a worker process on another
(:mod:`regulator.service.executor`); each process pins its own compute to one thread.
BLAS counts as much as torch: left at one thread per core, OpenBLAS wakes a second
thread for the monitors' small products (a block's ``[n, H] @ [H, H]``) and hands the
work across cores on the serving path; at batch 64 the OOD score of a block took about
twice as long (``bench/results/daemon.md``, session 7).
"""

from __future__ import annotations

import threadpoolctl
import torch

__all__ = ["pin_threads"]


def pin_threads() -> None:
    """One compute thread for torch and for BLAS in this process, from now on."""
    torch.set_num_threads(1)
    threadpoolctl.threadpool_limits(1, user_api="blas")
