"""Which versions registry retention keeps (policy ``storage.keep_versions`` and
``storage.keep_served_versions``); :meth:`Registry.prune` deletes the others."""

from __future__ import annotations

from collections.abc import Sequence

from regulator.registry.pointer import Pointer

__all__ = ["to_prune"]


def to_prune(names: Sequence[str], ptr: Pointer, keep_last: int, keep_served: int) -> list[str]:
    """The versions (of ``names``, oldest first) beyond the newest ``keep_last``,
    except the newest ``keep_served`` that ever served, the first and the served one.

    >>> names = [f"v{i:06d}" for i in range(1, 8)]
    >>> to_prune(names, Pointer("v000003", ("v000001", "v000003", "v000004")), 2, 1)
    ['v000002', 'v000005']
    """
    keep = set(names[-keep_last:]) | set(names[:1])
    keep |= set([v for v in names if v in ptr.promoted][-keep_served:])
    if ptr.current is not None:
        keep.add(ptr.current)
    return [v for v in names if v not in keep]
