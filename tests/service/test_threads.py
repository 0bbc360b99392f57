"""A service process computes on one thread for torch and one for BLAS (the daemon and
its recalibration worker each keep one core)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_pin_threads_leaves_one_torch_and_one_blas_thread() -> None:
    code = (
        "import json, threadpoolctl, torch\n"
        "from regulator.service.threads import pin_threads\n"
        "pin_threads()\n"
        "blas = [p['num_threads'] for p in threadpoolctl.threadpool_info()"
        " if p['user_api'] == 'blas']\n"
        "print(json.dumps({'torch': torch.get_num_threads(), 'blas': blas}))\n"
    )
    env_out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    got = json.loads(env_out.stdout.strip().splitlines()[-1])
    assert got["torch"] == 1
    assert got["blas"] and all(n == 1 for n in got["blas"])


def test_libraries_loaded_after_pin_threads_start_on_one_thread_too() -> None:
    # SciPy and scikit-learn bring their own OpenBLAS and libgomp with their first
    # import, often inside a recalibration job, after the worker pinned its threads.
    code = (
        "import json, os, threadpoolctl, torch\n"
        "for k in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):\n"
        "    os.environ.pop(k, None)\n"
        "from regulator.service.threads import pin_threads\n"
        "pin_threads()\n"
        "import scipy.linalg, sklearn.linear_model\n"
        "pools = [(p['filepath'], p['num_threads']) for p in threadpoolctl.threadpool_info()]\n"
        "print(json.dumps(pools))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
    )
    pools = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(pools) >= 3  # torch's and numpy's, and at least one SciPy/sklearn library
    assert all(n == 1 for _, n in pools), pools
