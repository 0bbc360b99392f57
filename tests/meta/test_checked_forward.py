"""A forward told its input is checked (the service's one validation) predicts exactly
what the checking forward does, and the checking forward still refuses bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from regulator.chip.profiles import load_profile
from regulator.errors import InputError
from regulator.meta.model import ChipModel, ModelBundle
from regulator.tasks.base import make_family

PRIOR = Path(__file__).resolve().parents[2] / "models" / "nanosensor"


@pytest.fixture(scope="module")
def shipped() -> ModelBundle:
    return ModelBundle.load(PRIOR)


@pytest.mark.parametrize("profile", ["ideal", "loihi", "memristive"])
def test_checked_forward_predicts_the_same(shipped: ModelBundle, profile: str) -> None:
    shipped.profile = load_profile(profile)
    fam = make_family("nanosensor")
    x, _ = fam.sample(fam.nominal_environment(), 9, np.random.default_rng(0))
    a = ChipModel(shipped, seed=3).predict(x)
    b = ChipModel(shipped, seed=3).predict(x, checked=True)  # same seed: same noise
    assert np.array_equal(a.outputs, b.outputs)
    assert np.array_equal(a.hidden_counts, b.hidden_counts)
    assert a.energy_j == b.energy_j
    assert a.telemetry.synaptic_ops == b.telemetry.synaptic_ops


def test_unchecked_forward_still_refuses_bad_input(shipped: ModelBundle) -> None:
    n_ch = int(shipped.task["n_channels"])
    x = np.zeros((2, n_ch, 32), np.float32)
    x[1, 0, 5] = np.inf
    with pytest.raises(InputError, match="NaN or infinite"):
        ChipModel(shipped, seed=0).predict(x)
    with pytest.raises(InputError, match="expected samples"):
        ChipModel(shipped, seed=0).predict(np.zeros((2, n_ch + 1, 32), np.float32))
