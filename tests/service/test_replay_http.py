"""The daemon as a real process, fed recorded gas-drift samples over HTTP on the samples'
clock, gives what ``regulator replay`` gives on the same files: the same loop.

A slice of batches 2 and 3 (the first 14 samples of each gas, in file order) is replayed
with the shipped gas policy, then pushed to ``regulator run`` one sample per
``POST /v1/samples`` with replay's labels over ``POST /v1/feedback``
(:mod:`tests.service.replay_http`). Equality is exact: both run the same code on the
same inputs, in one torch thread each (see ``SAME_THREADS``). About 30 s on two cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from regulator.client import Client
from regulator.policy.model import load_policy
from regulator.tasks.formats import load_file, save_npz
from tests.service.conftest import TOKEN, write_policy
from tests.service.replay_http import (
    CLIENT_TIMEOUT_S,
    daemon_policy,
    feed_daemon,
    recalibrations,
    run_replay_cli,
)

REPO = Path(__file__).resolve().parents[2]
GAS = REPO / "data" / "gas-drift"
PRIOR = REPO / "models" / "gas-drift"
PER_GAS = 14


def _slice(batch: int, out: Path) -> Path:
    rec = load_file(GAS / f"batch{batch}.dat")
    rows = np.sort(np.concatenate([np.flatnonzero(rec.y == c)[:PER_GAS] for c in np.unique(rec.y)]))
    path = out / f"batch{batch}.npz"
    save_npz(path, rec.x[rows], rec.y[rows])
    return path


@pytest.mark.skipif(not (PRIOR / "model.json").exists(), reason="models/gas-drift not built")
def test_daemon_over_http_matches_replay(tmp_path: Path, daemons: Any) -> None:
    files = [_slice(b, tmp_path) for b in (2, 3)]
    replay_cfg = yaml.safe_load(
        (REPO / "deploy" / "policies" / "gas-drift-replay.yaml").read_text()
    )
    replay_cfg["model"]["prior"] = str(PRIOR)
    replay_cfg["source"]["files"] = [str(f) for f in files]
    config = write_policy(tmp_path / "replay.yaml", replay_cfg)

    report = run_replay_cli(config, files, tmp_path / "replay.json", cwd=tmp_path)

    d = daemons(daemon_policy(replay_cfg))
    with Client(d.url, token=TOKEN, timeout=CLIENT_TIMEOUT_S) as client:
        served = feed_daemon(client, load_policy(config), files)

    want = [(s["accuracy"], s["model_version_at_end"]) for s in report["segments"]]
    got = [(s["accuracy"], s["version_at_end"]) for s in served]
    assert got == want, d.log_tail()
    recals = recalibrations(report["events"])
    assert any(r[3] == "accepted" for r in recals), recals  # the swap path was exercised
    assert recalibrations(d.events()) == recals
