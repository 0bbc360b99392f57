"""``train --executor ray``: the same prior as the single-process (inline) run for the
same seed, and a driver restarted from its checkpoint ends where an unbroken run ends."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from regulator.meta.train import TrainConfig, build_trainer, load_checkpoint, train_steps
from regulator.service.executor import Executor, InlineExecutor, create_executor

pytestmark = pytest.mark.slow

CFG = TrainConfig(meta_batch=2, hidden=(16,), n_steps=8, n_query=10, seed=2, checkpoint_every=2)


@pytest.fixture(scope="module")
def ray_executor(ray_cluster: None) -> Iterator[Executor]:
    ex = create_executor("ray")
    yield ex
    ex.shutdown(wait=False)


def _weights(tr: object) -> dict[str, np.ndarray]:
    net = tr.bundle.network  # type: ignore[attr-defined]
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def test_ray_training_equals_inline_and_resumes(ray_executor: Executor, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
        inline = build_trainer(CFG)
        train_steps(inline, 4, progress=False, executor=InlineExecutor())
        first = build_trainer(CFG)
        train_steps(first, 2, progress=False, ckpt_dir=tmp_path, executor=ray_executor)
        resumed = load_checkpoint(tmp_path)  # a restarted driver
        assert resumed.iteration == 2
        train_steps(resumed, 2, progress=False, executor=ray_executor)
    a, b = _weights(inline), _weights(resumed)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-5, err_msg=k)
    assert [h["env_seeds"] for h in resumed.history or []] == [
        h["env_seeds"] for h in inline.history or []
    ]
