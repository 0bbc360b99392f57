"""Few-shot evaluation as a batch of independent tasks, for any executor.

Each :class:`EvalTask` names a model folder and the seeds of one held-out task (its
environment, its chip instance's mismatch, its episode draw); :func:`eval_task` adapts
the prior on that task's shots and scores it on the query samples. A task is a pure
function of its fields, so a batch fanned out over worker processes or a Ray cluster
gives the same numbers as one run inline. :func:`evaluate_batch` draws the batch from one
seed, submits it and summarises the meta prior's row as :func:`~regulator.meta.evaluate.evaluate`
does (mean and 95% interval); the full peer table stays with ``evaluate``.

The submitter is anything with ``submit(fn, *args) -> Future`` (an
:class:`~regulator.service.executor.Executor`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from regulator.chip.network import ChipInstance
from regulator.meta.adapt import adapt
from regulator.meta.evaluate import HELDOUT_SEED_BASE, family_for, interval, query_metric
from regulator.meta.model import ModelBundle

__all__ = ["EvalResult", "EvalTask", "Submitter", "eval_task", "evaluate_batch", "task_batch"]

T = TypeVar("T")


class Submitter(Protocol):
    """Where jobs run: the part of an Executor this module uses."""

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]: ...


@dataclass(frozen=True)
class EvalTask:
    """One held-out K-shot task of the prior in ``model_dir``."""

    model_dir: str
    k: int
    n_query: int
    env_seed: int
    chip_seed: int
    episode_seed: int


@dataclass(frozen=True)
class EvalResult:
    """The adapted prior's query metric (accuracy, or mean absolute error), the
    un-adapted prior's on the same queries, and what adaptation cost."""

    metric: float
    no_adaptation: float
    learning_energy_j: float
    weight_writes: int


_cache_lock = threading.Lock()
_cache: dict[tuple[str, int], ModelBundle] = {}


def _bundle(model_dir: str) -> ModelBundle:
    """The model folder, loaded once per process (keyed by its manifest's mtime)."""
    path = Path(model_dir)
    key = (str(path.resolve()), (path / "manifest.json").stat().st_mtime_ns)
    with _cache_lock:
        if key not in _cache:
            _cache.clear()
            _cache[key] = ModelBundle.load(path)
        return _cache[key]


def eval_task(task: EvalTask) -> EvalResult:
    """Adapt a clone of the prior on the task's shots and score it on its queries."""
    bundle = _bundle(task.model_dir)
    fam = family_for(bundle)
    env = fam.environment_from_seed(task.env_seed)
    ep = fam.episode(env, task.k, task.n_query, np.random.default_rng(task.episode_seed))
    chip = ChipInstance.create(bundle.profile, bundle.cfg, task.chip_seed)
    new, rep = adapt(bundle, ep.support_x, ep.support_y, chip)
    adapted = query_metric(new, chip, ep.query_x, ep.query_y)
    chip = ChipInstance.create(bundle.profile, bundle.cfg, task.chip_seed)
    plain = query_metric(bundle, chip, ep.query_x, ep.query_y)
    return EvalResult(adapted, plain, float(rep.learning_energy_j), int(rep.weight_writes))


def task_batch(
    model_dir: str | Path, k: int, n_tasks: int, seed: int = 0, n_query: int = 60
) -> list[EvalTask]:
    """``n_tasks`` held-out tasks drawn from ``seed`` (environment seeds at or above
    :data:`~regulator.meta.evaluate.HELDOUT_SEED_BASE`, which meta-training never draws).

    >>> [t.env_seed >= 2**31 for t in task_batch("m", 5, 2, seed=1)]
    [True, True]
    """
    rng = np.random.default_rng([seed, int(k), 0xBA7C])
    tasks = []
    for _ in range(n_tasks):
        env_seed, chip_seed, ep_seed = (int(v) for v in rng.integers(0, 2**30, size=3))
        tasks.append(
            EvalTask(
                str(model_dir), int(k), n_query, HELDOUT_SEED_BASE + env_seed, chip_seed, ep_seed
            )
        )
    return tasks


def evaluate_batch(
    submitter: Submitter,
    model_dir: str | Path,
    k: int,
    n_tasks: int,
    seed: int = 0,
    n_query: int = 60,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """The meta prior's K-shot row over a batch run on ``submitter``: per-task results
    in task order, and their mean and 95% interval."""
    tasks = task_batch(model_dir, k, n_tasks, seed, n_query)
    futures = [submitter.submit(eval_task, t) for t in tasks]
    results = [f.result(timeout=timeout_s) for f in futures]
    return {
        "k": int(k),
        "seed": seed,
        "per_task": [r.metric for r in results],
        "meta": interval([r.metric for r in results]),
        "no_adaptation": interval([r.no_adaptation for r in results]),
        "learning_energy_j": float(np.mean([r.learning_energy_j for r in results])),
    }
