"""Fixtures for the task tests: the shared gas-drift data, found relative to the repo."""

from __future__ import annotations

from pathlib import Path

import pytest

GAS_DRIFT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gas-drift"


@pytest.fixture
def gas_drift_dir() -> Path:
    """../shared/data/gas-drift beside the repository; skips where it is absent."""
    if not (GAS_DRIFT / "batch1.dat").exists():
        pytest.skip(
            f"shared gas-drift data not found at {GAS_DRIFT} (expected ../shared beside the repo)"
        )
    return GAS_DRIFT
