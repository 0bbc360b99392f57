"""``check_x``'s all-floats fast path accepts exactly what the value-by-value check
accepts, and a refusal names the reason of the first bad value, as before."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from regulator.errors import InputError
from regulator.service.bodies import MAX_ABS_VALUE, check_x


def _reason_one_by_one(values: list[Any]) -> str | None:
    """The reference: the check the fast path stands in for, value by value."""
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return "bad_value"
        if isinstance(v, float) and not math.isfinite(v):
            return "non_finite"
        if not -MAX_ABS_VALUE <= v <= MAX_ABS_VALUE:
            return "out_of_range"
    return None


BAD = [
    float("nan"), float("inf"), -float("inf"), 2e9, -2e9, 1e300, True, "1", None, 3,
    MAX_ABS_VALUE, -MAX_ABS_VALUE,
]  # fmt: skip


def test_fast_path_matches_the_value_by_value_check() -> None:
    rng = random.Random(0)
    for _ in range(2000):
        row: list[Any] = [rng.uniform(-5.0, 5.0) for _ in range(rng.randint(1, 40))]
        for _ in range(rng.choice((0, 0, 1, 2, 3))):
            row[rng.randrange(len(row))] = rng.choice(BAD)
        want = _reason_one_by_one(row)
        for x in (row, [row, list(row)]):
            if want is None:
                check_x(x)
            else:
                with pytest.raises(InputError) as err:
                    check_x(x)
                assert err.value.reason == want, row


def test_huge_values_that_cancel_are_still_refused() -> None:
    with pytest.raises(InputError) as err:
        check_x([1e300, -1e300, 0.5])
    assert err.value.reason == "out_of_range"
