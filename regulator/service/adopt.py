"""Adopting an accepted candidate: store it in the registry, promote it, load it (not
yet serving) and prune old versions, yielding to serving between the steps
(:mod:`regulator.turns`); the caller swaps it in."""

from __future__ import annotations

from typing import TYPE_CHECKING

from regulator.service.candidate import CandidateResult
from regulator.service.jobs import Mode
from regulator.service.labels import Label

if TYPE_CHECKING:
    from regulator.service.runtime import Runtime
    from regulator.service.slot import Served

__all__ = ["adopt"]


def adopt(
    rt: Runtime,
    res: CandidateResult,
    parent: str,
    trigger: str,
    mode: Mode,
    reason: str,
    support: list[Label],
    checked: list[Label],
    n_unlabelled: int,
) -> tuple[str, Served]:
    """Add the accepted candidate to the registry, promote it and load it (not yet
    serving); old versions pruned. Yields to serving between the steps."""
    pause = rt.turns.pause
    assert res.folder is not None
    version = rt.registry.add(
        res.folder,
        parent=parent,
        trigger=trigger,
        data_used={
            "mode": mode,
            "support": [lab.sample_id for lab in support],
            "holdout": [lab.sample_id for lab in checked],
            "unlabelled": n_unlabelled,
        },
        evaluation={**res.evaluation, "reason": reason},
        trusted=True,  # just written by the executor, manifest of these bytes
    )
    pause()
    rt.registry.promote(version)
    pause()
    new = rt.slot.load(version, rt.clock())  # off the serving thread
    pause()
    rt.prune()
    return version, new
