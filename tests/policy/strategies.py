"""Hypothesis strategies for policy files: valid ones drawn within every bound, and
hostile mutations of them (one leaf replaced by a value that could crash a loader).

Shared by ``tests/policy/test_properties.py`` (a hundred files) and
``bench/policy_fuzz.py`` (thousands).
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

NAME = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}\Z")
SECONDS = st.floats(min_value=0.001, max_value=366 * 86_400.0, allow_nan=False)
ACTIONS = st.sampled_from(
    ["recalibrate_supervised", "recalibrate_label_free", "rollback", "low_power", "alert_only"]
)

CONDITIONS = st.one_of(
    st.fixed_dictionaries({"signal": st.just("drift_detected")}, optional={"for_s": SECONDS}),
    st.fixed_dictionaries(
        {
            "signal": st.just("ood_pvalue_below"),
            "threshold": st.floats(min_value=1e-6, max_value=1.0),
        },
        optional={"for_s": SECONDS},
    ),
    st.fixed_dictionaries(
        {
            "signal": st.just("accuracy_below"),
            "threshold": st.floats(min_value=0.0, max_value=1.0),
            "last_n_labels": st.integers(min_value=1, max_value=100),
        }
    ),
    st.fixed_dictionaries(
        {"signal": st.just("power_above"), "watts": st.floats(min_value=1e-9, max_value=1e3)}
    ),
    st.fixed_dictionaries(
        {"signal": st.sampled_from(["layer_silent", "layer_saturated"])},
        optional={"layers": st.lists(NAME, max_size=3)},
    ),
)


@st.composite
def valid_policies(draw: st.DrawFn) -> dict[str, Any]:
    """A policy dict that must validate (names unique, windows consistent)."""
    n_rules = draw(st.integers(min_value=0, max_value=3))
    rules = [
        {
            "name": f"r{i}",
            "condition": draw(CONDITIONS),
            "action": draw(ACTIONS),
            "cooldown_s": draw(SECONDS),
        }
        for i in range(n_rules)
    ]
    schedules = [
        {"id": f"s{i}", "kind": "interval", "every_s": draw(SECONDS), "action": draw(ACTIONS)}
        for i in range(draw(st.integers(min_value=0, max_value=2)))
    ]
    data: dict[str, Any] = {
        "device": {
            "id": draw(NAME),
            "profile": draw(st.sampled_from(["ideal", "loihi", "memristive"])),
            "seed": draw(st.integers(min_value=0, max_value=2**32 - 1)),
        },
        "model": {"n_steps": draw(st.none() | st.integers(min_value=1, max_value=1024))},
        "source": draw(
            st.one_of(
                st.fixed_dictionaries(
                    {
                        "kind": st.just("simulated"),
                        "family": st.sampled_from(["nanosensor", "navigation"]),
                        "rate_hz": st.floats(min_value=0.01, max_value=100_000),
                        "schedule": st.fixed_dictionaries(
                            {
                                "kind": st.sampled_from(["none", "abrupt", "gradual", "recurring"]),
                                "period_s": SECONDS,
                            }
                        ),
                        "label_fraction": st.floats(min_value=0, max_value=1),
                    }
                ),
                st.fixed_dictionaries(
                    {"kind": st.just("http"), "queue_size": st.integers(1, 1_000_000)}
                ),
            )
        ),
        "monitors": {
            "ood_scorer": draw(st.sampled_from(["mahalanobis", "energy", "max_softmax"])),
            "accuracy_window_labels": draw(st.integers(min_value=100, max_value=1_000_000)),
        },
        "rules": rules,
        "schedules": schedules,
        "recalibration": {
            "k_shot": draw(st.integers(min_value=1, max_value=1000)),
            "max_per_hour": draw(st.integers(min_value=0, max_value=3600)),
            "timeout_s": draw(st.floats(min_value=0.1, max_value=3600)),
        },
        "http": {"port": draw(st.integers(min_value=0, max_value=65535))},
        "storage": {"keep_versions": draw(st.integers(min_value=2, max_value=100_000))},
    }
    return data


HOSTILE = st.one_of(
    st.just(math.inf),
    st.just(-math.inf),
    st.just(math.nan),
    st.integers(min_value=2**63, max_value=2**200),
    st.integers(max_value=-1),
    st.floats(min_value=1e300, max_value=1.7e308),
    st.booleans(),
    st.none(),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.just("\x00\x1b[31m"),
    st.just([[[[[[[[[[[]]]]]]]]]]]),
)


def leaves(data: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path to a scalar or empty container in ``data``."""
    if isinstance(data, dict) and data:
        return [p for k, v in data.items() for p in leaves(v, (*path, k))]
    if isinstance(data, list) and data:
        return [p for i, v in enumerate(data) for p in leaves(v, (*path, i))]
    return [path]


def replaced(data: Any, path: tuple[str | int, ...], value: Any) -> Any:
    """A copy of ``data`` with the leaf at ``path`` replaced by ``value``."""
    if not path:
        return value
    head, *rest = path
    if isinstance(data, dict):
        return {k: (replaced(v, tuple(rest), value) if k == head else v) for k, v in data.items()}
    out = list(data)
    out[int(head)] = replaced(out[int(head)], tuple(rest), value)
    return out


@st.composite
def hostile_policies(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid policy with one leaf replaced by a hostile value; and the dotted path."""
    data = draw(valid_policies())
    path = draw(st.sampled_from(leaves(data)))
    return replaced(data, path, draw(HOSTILE)), ".".join(str(p) for p in path)
