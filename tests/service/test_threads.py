"""A service process computes on one thread for torch and one for BLAS (the daemon and
its recalibration worker each keep one core)."""

from __future__ import annotations

import json
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
