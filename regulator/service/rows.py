"""The results of one serve call, kept as columns (the chip's output arrays as they
came), with a row (the dict a ``POST /v1/samples`` answer carries) made only when one
is read: serving at batch 64 then builds no per-sample objects, and a reply's row is
made by the HTTP thread that hands it on, not by the main loop.

>>> import numpy as np
>>> rows = ServedRows(3, ["a", "c"], np.array([2, 0]), np.zeros((2, 2)), "v1",
...                   errors={1: InputError("sample holds NaN", "non_finite")})
>>> len(rows), rows[0]["prediction"], rows[0]["ood_p_value"], rows[1].reason
(3, 2, None, 'non_finite')
>>> rows.set_p_values(np.array([0.9, 0.5, 0.25]), at=1)  # the monitors ran (Inference.flush)
>>> [r["ood_p_value"] for r in rows if isinstance(r, dict)]
[0.5, 0.25]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np

from regulator.errors import InputError

__all__ = ["Result", "ServedRows"]

Result = dict[str, Any] | InputError
"""One served sample (``sample_id``, ``prediction``, ``outputs``, ``ood_p_value``,
``version``), or the InputError that refused it."""


_NONE = np.zeros(0)


class ServedRows(Sequence[Result]):
    """One result per item of a serve call, in order: the served samples' columns
    (``ids``, ``predictions [n]``, ``outputs [n, K]``, ``p_values [n]``, NaN until the
    monitors ran) and the refused items' errors by their position. Read-only to
    callers; the serving path sets the p-values (:meth:`set_p_values`)."""

    __slots__ = ("_classifies", "_errors", "_labels", "_n_items", "_p_at", "_p_values",
                 "_predictions", "_row_of", "ids", "outputs", "version")  # fmt: skip

    def __init__(
        self,
        n_items: int,
        ids: list[str],
        labels: np.ndarray,
        outputs: np.ndarray,
        version: str,
        errors: dict[int, InputError] | None = None,
        classifies: bool = True,
    ) -> None:
        self._n_items = n_items
        self.ids = ids
        self._labels = labels  # the chip's, as it gave them (a view is made when read)
        self._classifies = classifies
        self._predictions: np.ndarray | None = None
        self.outputs = outputs
        # the OOD p-values: a slice of the monitors' block, set when they ran
        self._p_values: np.ndarray = _NONE
        self._p_at = 0
        self.version = version
        self._errors = errors or {}
        # item position -> served row, only when some items were refused
        self._row_of: list[int] | None = None
        if self._errors:
            served = [i for i in range(n_items) if i not in self._errors]
            row_of = [-1] * n_items
            for row, i in enumerate(served):
                row_of[i] = row
            self._row_of = row_of

    @property
    def predictions(self) -> np.ndarray:
        """``[n]``: class indices (int64) or regression values, one per served sample."""
        if self._predictions is None:
            flat = np.asarray(self._labels).reshape(len(self.ids), -1)[:, 0]
            self._predictions = flat.astype(np.int64) if self._classifies else flat
        return self._predictions

    @property
    def p_values(self) -> np.ndarray:
        """``[n]`` OOD p-values, NaN until the monitors ran."""
        n = len(self.ids)
        if len(self._p_values) < self._p_at + n:
            return np.full(n, np.nan)
        return self._p_values[self._p_at : self._p_at + n].copy()

    def set_p_values(self, block: np.ndarray, at: int) -> None:
        """The monitors ran: this call's p-values are ``block[at : at + n]`` (kept by
        reference; the serving path calls this, nobody else)."""
        self._p_values, self._p_at = block, at

    @classmethod
    def refused(cls, errors: dict[int, InputError], n_items: int, version: str) -> ServedRows:
        """Every item refused: nothing was served."""
        return cls(n_items, [], np.zeros(0), np.zeros((0, 0)), version, errors)

    @property
    def errors(self) -> dict[int, InputError]:
        """The refused items' errors by position (read-only)."""
        return self._errors

    def __len__(self) -> int:
        return self._n_items

    @overload
    def __getitem__(self, i: int) -> Result: ...
    @overload
    def __getitem__(self, i: slice) -> list[Result]: ...
    def __getitem__(self, i: int | slice) -> Result | list[Result]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._n_items))]
        if i < 0:
            i += self._n_items
        if not 0 <= i < self._n_items:
            raise IndexError(i)
        if self._row_of is None:
            return self._row(i)
        err = self._errors.get(i)
        return err if err is not None else self._row(self._row_of[i])

    def __iter__(self) -> Iterator[Result]:
        for i in range(self._n_items):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ServedRows({list(self)!r})"

    def _row(self, row: int) -> dict[str, Any]:
        at = self._p_at + row
        p = float(self._p_values[at]) if at < len(self._p_values) else None
        return {
            "sample_id": self.ids[row],
            "prediction": self.predictions[row].item(),
            "outputs": self.outputs[row].tolist(),
            "ood_p_value": p,
            "version": self.version,
        }
