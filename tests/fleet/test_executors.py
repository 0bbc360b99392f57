"""The same job gives the same result on every executor: inline, a worker process, Ray."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from regulator.meta.eval_tasks import evaluate_batch
from regulator.meta.train import TrainConfig, build_trainer
from regulator.meta.train_fanout import fanout_meta_batch
from regulator.service.candidate import build_candidate
from regulator.service.executor import Executor, create_executor
from tests.service.test_candidate import _request

pytestmark = pytest.mark.slow

NAMES = ("inline", "process", "ray")


@pytest.fixture(scope="module")
def executors(ray_cluster: None) -> Iterator[dict[str, Executor]]:
    made = {name: create_executor(name) for name in NAMES}
    yield made
    for ex in made.values():
        ex.shutdown(wait=False, cancel_pending=True)


def test_recalibration_candidate_is_the_same_on_every_executor(
    executors: dict[str, Executor], tiny_prior: Path, tmp_path: Path
) -> None:
    results = {}
    for name, ex in executors.items():
        out = tmp_path / name
        out.mkdir()
        results[name] = ex.run(build_candidate, _request(tiny_prior, out), timeout_s=300)
    ref = results["inline"]
    assert ref.accepted
    for name, res in results.items():
        assert res.accepted == ref.accepted, name
        assert res.evaluation == pytest.approx(ref.evaluation, abs=1e-6), name
        assert res.cost["weight_writes"] == ref.cost["weight_writes"], name
        assert res.cost["learning_energy_j"] == pytest.approx(ref.cost["learning_energy_j"])
    weights = {
        name: (Path(res.folder) / "weights.safetensors").read_bytes()
        for name, res in results.items()
        if res.folder
    }
    assert len(set(weights.values())) == 1, "candidate weights differ between executors"


def test_evaluate_task_batch_is_the_same_on_every_executor(
    executors: dict[str, Executor], tiny_prior: Path
) -> None:
    rows = {
        name: evaluate_batch(ex, tiny_prior, k=3, n_tasks=4, seed=5)
        for name, ex in executors.items()
    }
    ref = rows["inline"]
    assert len(ref["per_task"]) == 4
    for name, row in rows.items():
        assert row["per_task"] == pytest.approx(ref["per_task"], abs=1e-9), name


def test_meta_batch_gradients_are_the_same_on_every_executor(
    executors: dict[str, Executor],
) -> None:
    cfg = TrainConfig(meta_batch=3, hidden=(16,), n_steps=8, n_query=10, seed=4)
    grads = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
        for name, ex in executors.items():
            tr = build_trainer(cfg)
            losses, _, seeds = fanout_meta_batch(tr, ex)
            grads[name] = (
                losses,
                seeds,
                {
                    k: p.grad.clone()
                    for k, p in tr.bundle.network.named_parameters()
                    if p.grad is not None
                },
            )
    ref_losses, ref_seeds, ref_grads = grads["inline"]
    assert ref_grads
    for name, (losses, seeds, g) in grads.items():
        assert seeds == ref_seeds, name
        assert losses == pytest.approx(ref_losses, rel=1e-5), name
        assert g.keys() == ref_grads.keys()
        for k in g:
            np.testing.assert_allclose(g[k].numpy(), ref_grads[k].numpy(), rtol=1e-4, atol=1e-6)


def _die_on_first_attempts(marker_dir: str, deaths: int) -> int:
    """Kill this worker (SIGKILL, as an OOM killer or a lost node would) the first
    ``deaths`` times it runs; then answer how many attempts it took."""
    import os
    import signal

    seen = len(list(Path(marker_dir).iterdir()))
    if seen < deaths:
        (Path(marker_dir) / f"attempt{seen}").touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return seen + 1


def test_a_ray_job_whose_worker_is_killed_is_retried_then_refused(
    ray_cluster: None, tmp_path: Path
) -> None:
    from regulator.errors import AdaptationError
    from regulator.service.executor_ray import RayExecutor

    ex = RayExecutor(max_retries=2)
    try:
        survived = tmp_path / "survived"
        survived.mkdir()
        assert ex.run(_die_on_first_attempts, str(survived), 2, timeout_s=120) == 3
        lost = tmp_path / "lost"
        lost.mkdir()
        with pytest.raises(AdaptationError, match="Ray task failed"):
            ex.run(_die_on_first_attempts, str(lost), 5, timeout_s=120)
        assert len(list(lost.iterdir())) == 3  # the first try and its two retries
    finally:
        ex.shutdown(wait=False, cancel_pending=True)


def _compute_threads() -> tuple[int, int]:
    """In the job: torch's intra-op threads and the BLAS pools' largest size."""
    import threadpoolctl
    import torch

    blas = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    return torch.get_num_threads(), max(blas, default=1)


def test_a_job_runs_on_one_torch_and_one_blas_thread_on_every_worker_executor(
    executors: dict[str, Executor],
) -> None:
    # A worker's BLAS left at one thread per core hands small products across cores
    # (regulator.service.threads); the worker executors pin both, as the daemon does.
    for name in ("process", "ray"):
        assert executors[name].run(_compute_threads, timeout_s=120) == (1, 1), name
