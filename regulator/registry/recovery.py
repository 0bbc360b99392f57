"""Which version to serve when the registry opens, damaged or not."""

from __future__ import annotations

from collections.abc import Sequence

from regulator.registry.pointer import Pointer

__all__ = ["serving_order"]


def serving_order(names: Sequence[str], ptr: Pointer) -> list[str]:
    """The sound versions ``names`` (oldest first) in the order to try serving them:
    the served one, then the newest that served and was not rolled back, then any other
    that was not rolled back, newest first.

    >>> serving_order(["v000001", "v000002", "v000003", "v000004"],
    ...               Pointer(None, ("v000001", "v000002"), ("v000002",)))
    ['v000001', 'v000004', 'v000003']
    """
    served = [v for v in reversed(names) if v in ptr.promoted and v not in ptr.rolled_back]
    others = [v for v in reversed(names) if v not in served and v not in ptr.rolled_back]
    order = [v for v in [ptr.current] if v is not None and v in names]
    return order + [v for v in served + others if v not in order]
