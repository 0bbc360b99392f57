"""The one check of what the served model takes: samples ``[C, L]``, batches and labels.

Every refusal is an :class:`~regulator.errors.InputError` whose ``reason`` is one of
:data:`~regulator.errors.RejectReason`, set where the fault is found; nothing
downstream picks a reason from a message. A batch is checked once as a whole; only a
batch that fails is checked sample by sample, so that its good samples still serve.

>>> import numpy as np
>>> check = InputCheck("classification", n_channels=2, length=3, n_classes=4)
>>> check.sample(np.zeros((2, 3))).shape
(2, 3)
>>> try:
...     check.sample(np.full((2, 3), np.nan))
... except Exception as err:
...     print(err.reason)
non_finite
>>> check.target(5)
Traceback (most recent call last):
...
regulator.errors.InputError: y must be a class index in [0, 4), got 5
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from regulator.errors import InputError

if TYPE_CHECKING:
    from regulator.meta.model import ModelBundle

__all__ = ["InputCheck"]


@dataclass(frozen=True)
class InputCheck:
    """The input contract of one served model: ``kind`` (``classification`` or a
    regression), ``n_channels`` x ``length`` samples (None: not fixed by the model),
    ``n_classes`` classes for a classifier."""

    kind: str
    n_channels: int | None
    length: int | None
    n_classes: int

    @classmethod
    def for_bundle(cls, bundle: ModelBundle) -> InputCheck:
        task = bundle.task
        n_ch, length = task.get("n_channels"), task.get("length")
        return cls(
            bundle.kind,
            None if n_ch is None else int(n_ch),
            None if length is None else int(length),
            int(bundle.cfg.n_outputs),
        )

    @property
    def classifies(self) -> bool:
        return self.kind == "classification"

    def sample(self, x: Any) -> np.ndarray:
        """``x`` as float32 ``[C, L]`` (a ``[C]`` sample is ``[C, 1]``), or InputError
        with reason ``bad_shape``, ``bad_value`` or ``non_finite``."""
        try:
            arr = np.asarray(x, dtype=np.float32)
        except (ValueError, TypeError) as err:
            raise InputError(f"a sample must be numbers: {err}", "bad_value") from None
        if arr.ndim == 1:
            arr = arr[:, None]
        n_ch, length = self.n_channels, self.length
        if arr.ndim != 2 or (n_ch is not None and arr.shape[0] != n_ch):
            raise InputError(
                f"a sample must be [{n_ch}, L] or [{n_ch}], got {list(arr.shape)}", "bad_shape"
            )
        if length is not None and arr.shape[1] != length:
            raise InputError(
                f"a sample must have {length} time points, got {arr.shape[1]}", "bad_shape"
            )
        if not np.isfinite(arr).all():
            raise InputError("sample holds NaN or infinite values", "non_finite")
        return arr

    def batch(self, xs: Sequence[Any]) -> np.ndarray | None:
        """The batch ``[n, C, L]`` if every sample is well-formed (one check for all),
        else None: then check each with :meth:`sample`."""
        if self.n_channels is None or self.length is None or not xs:
            return None
        try:
            batch, refused = self.array(xs)  # the one check of a batch's shape and values
        except InputError:
            return None
        return None if refused else batch

    def array(self, x: Any) -> tuple[np.ndarray, dict[int, InputError]]:
        """Samples given as one array ``[n, C, L]`` (``[n, C]`` when ``L`` is 1): the
        good ones, copied as float32 (the caller may reuse its buffer), and the refused
        ones' errors by row (non-finite values). An array of the wrong shape or type is
        refused whole: InputError ``bad_shape`` or ``bad_value``."""
        try:
            arr = np.array(x, dtype=np.float32)  # a copy
        except (ValueError, TypeError) as err:
            raise InputError(f"samples must be numbers: {err}", "bad_value") from None
        if arr.ndim == 2 and self.length == 1:
            arr = arr[:, :, None]
        n_ch, length = self.n_channels, self.length
        if (
            arr.ndim != 3
            or (n_ch is not None and arr.shape[1] != n_ch)
            or (length is not None and arr.shape[2] != length)
        ):
            raise InputError(
                f"samples must be [n, {n_ch}, {length}], got {list(arr.shape)}", "bad_shape"
            )
        if np.isfinite(arr).all():  # the common case: one pass
            return arr, {}
        good = np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
        errors = {
            int(i): InputError("sample holds NaN or infinite values", "non_finite")
            for i in np.flatnonzero(~good)
        }
        return arr[good], errors

    def target(self, y: Any) -> int | float:
        """``y`` as the model takes it: a class index, or a finite number."""
        if self.classifies:
            if (
                isinstance(y, bool)
                or not isinstance(y, int | np.integer)
                or not 0 <= y < self.n_classes
            ):
                raise InputError(
                    f"y must be a class index in [0, {self.n_classes}), got {y!r}", "bad_label"
                )
            return int(y)
        if isinstance(y, bool) or not isinstance(y, int | float | np.number):
            raise InputError(f"y must be a number, got {type(y).__name__}", "bad_value")
        if not math.isfinite(float(y)):
            raise InputError("y must be finite", "non_finite")
        return float(y)
