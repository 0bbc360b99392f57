"""Fixtures for the task tests: the gas-drift data shipped in the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

GAS_DRIFT = Path(__file__).resolve().parents[2] / "data" / "gas-drift"


@pytest.fixture
def gas_drift_dir() -> Path:
    """``data/gas-drift`` of the repository (batches 1-5, shipped with it)."""
    assert (GAS_DRIFT / "batch5.dat").is_file(), f"gas-drift data missing from {GAS_DRIFT}"
    return GAS_DRIFT
