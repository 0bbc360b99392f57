"""The fault matrix in small (``bench/fault_matrix.py`` runs it in full, with the report):
kill -9 at random moments and inside registry writes loses no acknowledged label,
corrupts no version and leaves no orphaned folder; damaged event logs and label files at
start are skipped, not fatal; the wall clock stepping a day either way loses nothing and
frees no budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.service.faults import DAMAGE, damaged_starts, kill_cycles
from tests.service.faults_clock import DAY, PHASES, clock_jumps
from tests.service.faults_registry import registry_kill_cycles


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


@pytest.mark.slow
def test_kill_9_inside_registry_writes(tiny_prior: Path, tmp_path: Path) -> None:
    """A kill that lands inside the copy, before the rename, either side of the pointer's
    rewrite and mid-prune: nothing corrupted or lost, no debris, no false damage."""
    points = ("add.start", "add.staged", "commit.written", "prune.renamed")
    out = registry_kill_cycles(tiny_prior, tmp_path, n=len(points), points=points,
                               say=lambda _: None)  # fmt: skip
    assert out["landed_at"] == dict.fromkeys(points, 1), out
    assert out["labels_acknowledged"] > 0
    assert out["labels_lost"] == 0, out
    assert out["versions_corrupted"] == 0, out
    assert out["orphan_folders_after_restart"] == 0, out
    assert out["lineage_mismatches_after_restart"] == [], out
    assert out["problems_after_restart"] == [], out


@pytest.fixture(scope="module")
def stepped(tiny_prior: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One daemon run through the wall-clock steps of ``PHASES`` (8 s each)."""
    root = tmp_path_factory.mktemp("clock")
    return clock_jumps(tiny_prior, root, phase_s=8.0, say=lambda _: None)


@pytest.mark.slow
def test_wall_clock_steps_lose_nothing_and_keep_budgets(stepped: dict[str, Any]) -> None:
    rows = {r["phase"]: r for r in stepped["phases"]}
    assert [r["offset_s"] for r in stepped["phases"]] == [p[1] for p in PHASES]
    # the step reached the daemon: its events are stamped a day ahead, then a day behind
    assert abs(rows["stepped forward 1 day"]["event_ts_minus_real_s"] - DAY) < 60
    assert abs(rows["restarted 1 day behind"]["event_ts_minus_real_s"] + DAY) < 60
    for r in stepped["phases"]:
        assert r["samples_served"] > 0 and r["readyz"] == 200, r
        assert r["healthz_200_share"] > 0.5, r
    assert stepped["labels_acknowledged"] > 0
    assert stepped["labels_lost"] == 0, stepped
    assert stepped["versions_corrupted"] == 0, stepped
    # max_per_hour runs on the monotonic clock: the first process, asked every 4 s for
    # three phases, reaches its limit and a day's step forward frees no more
    assert stepped["recalibrations_that_worked_per_process"][0] == stepped["max_per_hour"]
    assert max(stepped["recalibrations_that_worked_per_process"]) <= stepped["max_per_hour"]


@pytest.mark.slow
def test_interval_schedules_run_on_after_the_clock_steps_back(stepped: dict[str, Any]) -> None:
    rows = {r["phase"]: r for r in stepped["phases"]}
    assert rows["stepped back 2 days (1 day behind)"]["schedule_runs"] > 0, rows
