"""The fault matrix in small (``bench/fault_matrix.py`` runs it in full, with the report):
kill -9 at random moments loses no acknowledged label, corrupts no version and leaves
no orphaned folder; damaged event logs and label files at start are skipped, not fatal."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.faults import DAMAGE, damaged_starts, kill_cycles


@pytest.mark.slow
def test_kill_9_at_random_moments(tiny_prior: Path, tmp_path: Path) -> None:
    out = kill_cycles(tiny_prior, tmp_path, n=3, seed=1, say=lambda _: None)
    assert out["labels_acknowledged"] > 0
    assert out["labels_lost"] == 0, out
    assert out["versions_corrupted"] == 0, out
    assert out["orphan_folders_after_restart"] == 0, out


@pytest.mark.slow
def test_damaged_logs_and_label_files_at_start(
    tiny_prior: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = [c for c in DAMAGE if "log" in c or "label" in c]
    monkeypatch.setattr("tests.service.faults.DAMAGE", {c: DAMAGE[c] for c in cases})
    rows = damaged_starts(tiny_prior, tmp_path, say=lambda _: None)
    assert len(rows) == len(cases) == 3
    for row in rows:
        assert row["started"] and row["serves"] == row["expected"], row
        assert row["labels"] > 0, row  # the sound labels survived
