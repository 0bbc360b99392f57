"""One meta-batch fanned out over workers: each task's inner loop and query gradient as
an independent job, summed in task order on the driver.

The driver draws three seeds per task from the run's generator (environment, chip
instance, episode draw) and ships them with the current weights; a worker rebuilds the
run's :class:`~regulator.meta.train.Trainer` once per configuration, loads the weights,
runs :func:`~regulator.meta.episodes.task_step` on its own generator seeded by the episode
seed, and returns the gradient of ``loss / meta_batch``. Every executor (inline, worker
process, Ray) therefore computes the same gradients for the same seed, up to float
summation order, and the driver alone owns the optimiser, the history and the
checkpoints. (The in-process path of :func:`~regulator.meta.train.train_steps` draws
episodes from the run's generator directly, so its runs differ from these: compare
executors with each other, ``inline`` being the single-process one.)
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from regulator.meta.eval_tasks import Submitter
from regulator.tasks.normalisation import Normaliser

if TYPE_CHECKING:
    from regulator.meta.train import Trainer

__all__ = ["TaskGradient", "TaskJob", "fanout_meta_batch", "task_gradient"]


@dataclass(frozen=True)
class TaskJob:
    """One task of a meta-batch: the run's configuration (JSON), its current weights
    (``net.*`` and ``meta.*``), its normaliser, and the task's seeds."""

    config_json: str
    weights: dict[str, torch.Tensor]
    normaliser: dict[str, object]
    env_seed: int
    chip_seed: int
    episode_seed: int


@dataclass(frozen=True)
class TaskGradient:
    """Gradients of ``loss / meta_batch`` by weight name, the query loss and metric."""

    grads: dict[str, torch.Tensor]
    loss: float
    metric: float


def _named(tr: Trainer) -> dict[str, torch.Tensor]:
    named: dict[str, torch.Tensor] = {
        f"net.{k}": p for k, p in tr.bundle.network.named_parameters()
    }
    named.update({f"meta.{k}": v for k, v in tr.bundle.meta_tensors.items()})
    return named


_lock = threading.Lock()
_trainers: dict[str, Trainer] = {}


def _worker_trainer(config_json: str) -> Trainer:
    """This process's copy of the run (built once per configuration)."""
    from regulator.meta.train import TrainConfig, build_trainer

    with _lock:
        if config_json not in _trainers:
            _trainers.clear()
            _trainers[config_json] = build_trainer(TrainConfig.model_validate_json(config_json))
        return _trainers[config_json]


def task_gradient(job: TaskJob) -> TaskGradient:
    """Runs on a worker: the task's query gradient at the shipped weights."""
    from regulator.meta.episodes import task_step

    tr = _worker_trainer(job.config_json)
    with _lock:  # one task at a time per process (inline and thread executors share it)
        named = _named(tr)
        with torch.no_grad():
            for name, value in job.weights.items():
                named[name].copy_(value)
        for p in named.values():
            p.grad = None
        tr.bundle.normaliser = Normaliser.from_dict(dict(job.normaliser))
        tr.rng = np.random.default_rng(job.episode_seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
            loss, m = task_step(tr, job.env_seed, job.chip_seed)
            (loss / tr.cfg.meta_batch).backward()
        grads = {k: p.grad.detach().clone() for k, p in named.items() if p.grad is not None}
        return TaskGradient(grads, float(loss.detach()), float(m))


def fanout_meta_batch(
    tr: Trainer, submitter: Submitter, timeout_s: float = 3600.0
) -> tuple[list[float], list[float], list[int]]:
    """One meta-batch on ``submitter``: accumulates every task's gradient into the
    driver's ``.grad`` in task order; returns (losses, metrics, environment seeds)."""
    named = _named(tr)
    weights = {k: v.detach().clone() for k, v in named.items()}
    config_json = tr.cfg.model_dump_json()
    normaliser = tr.bundle.normaliser.to_dict()
    jobs, env_seeds = [], []
    for _ in range(tr.cfg.meta_batch):
        env_seed, chip_seed, ep_seed = (int(v) for v in tr.rng.integers(0, 2**31 - 1, size=3))
        env_seeds.append(env_seed)
        jobs.append(TaskJob(config_json, weights, normaliser, env_seed, chip_seed, ep_seed))
    futures = [submitter.submit(task_gradient, job) for job in jobs]
    results = [f.result(timeout=timeout_s) for f in futures]
    for res in results:
        for name, g in res.grads.items():
            p = named[name]
            p.grad = g.clone() if p.grad is None else p.grad + g
    return [r.loss for r in results], [r.metric for r in results], env_seeds
