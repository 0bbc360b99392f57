"""The serving slot on the swap path: each file's bytes hashed once, no file I/O in
the swap itself (the serving thread's part)."""

from __future__ import annotations

import builtins
import contextlib
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from regulator import modelfolder
from regulator.policy.model import Policy
from regulator.service.runtime import Runtime
from regulator.service.slot import Served
from regulator.tasks.base import make_family
from tests.service.conftest import policy_dict


def _runtime(tmp_path: Path, prior: Path) -> Runtime:
    recalibration = {
        "k_shot": 2,
        "acceptance": "cross_validation",
        "acceptance_margin": 1.0,
        "max_per_hour": 60,
    }
    policy = Policy.model_validate(policy_dict(prior, recalibration=recalibration))
    rt = Runtime(policy, tmp_path / "state", clock=lambda: 0.0, inline_jobs=True)
    fam = make_family("nanosensor")
    x, y = fam.sample(fam.environment_from_seed(99), 20, np.random.default_rng(4))
    rt.add_labels([(f"l{i}", int(y[i]), x[i]) for i in range(20)])
    return rt


def test_one_swap_hashes_each_file_once(
    tmp_path: Path, tiny_prior: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the candidate's save to its serving, the new version's files are hashed
    once (when its manifest is written), and the parent's once (read to adapt)."""
    rt = _runtime(tmp_path, tiny_prior)
    try:
        parent = rt.registry.path(rt.serving.version).resolve()
        hashed: list[Path] = []
        real = modelfolder.sha256_file

        def counting(path: str | os.PathLike[str]) -> str:
            hashed.append(Path(path).resolve())
            return real(path)

        monkeypatch.setattr(modelfolder, "sha256_file", counting)
        out = rt.request_recalibration("http")
        assert out["outcome"] == "accepted", out
        monkeypatch.setattr(modelfolder, "sha256_file", real)
        new = rt.registry.path(rt.serving.version)
        payload = set(modelfolder.read_manifest(new)["files"])
        counts = Counter(("parent" if p.is_relative_to(parent) else "new", p.name) for p in hashed)
        assert max(counts.values()) == 1, counts
        assert {name for who, name in counts if who == "new"} == payload
        # Still sound on disk, and checked at the next start.
        assert modelfolder.verify(new)["files"].keys() == payload
    finally:
        rt.close()


@contextlib.contextmanager
def _no_file_io(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    touched: list[str] = []

    def refuse(name: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            touched.append(f"{name}{args[:1]}")
            return real(*args, **kwargs)

        return call

    with monkeypatch.context() as m:
        for mod, name in [(builtins, "open"), (os, "open"), (os, "scandir"), (os, "listdir"),
                          (os, "rename"), (os, "replace"), (os, "unlink"), (os, "stat"),
                          (os, "fsync"), (shutil, "rmtree")]:  # fmt: skip
            m.setattr(mod, name, refuse(name, getattr(mod, name)))
        yield touched


def test_the_swap_itself_touches_no_file(
    tmp_path: Path, tiny_prior: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storing, loading and pruning happen before the swap (off the serving thread in
    the daemon); the swap is a reference assignment and a reset of the monitors."""
    rt = _runtime(tmp_path, tiny_prior)
    try:
        real_swap = rt.swap_in
        seen: list[list[str]] = []

        def swap_in(new: Served) -> None:
            with _no_file_io(monkeypatch) as touched:
                real_swap(new)
            seen.append(touched)

        monkeypatch.setattr(rt, "swap_in", swap_in)
        out = rt.request_recalibration("http")
        assert out["outcome"] == "accepted", out
        assert seen == [[]]
    finally:
        rt.close()
