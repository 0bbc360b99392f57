"""The versioned model store: lineage, promotion, rollback, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from regulator import modelfolder
from regulator.errors import ChecksumError, RegistryError
from regulator.registry import Registry


def _model(folder: Path, payload: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.safetensors").write_bytes(payload)
    modelfolder.write_manifest(folder, {"prior": "demo"})
    return folder


@pytest.fixture
def prior(tmp_path: Path) -> Path:
    return _model(tmp_path / "prior", b"prior")


def test_bootstrap_once(tmp_path: Path, prior: Path) -> None:
    reg = Registry(tmp_path / "reg", clock=lambda: 12.5)
    assert reg.current() is None and reg.versions() == []
    assert reg.bootstrap(prior) == "v000001"
    assert reg.bootstrap(prior) == "v000001"
    [info] = reg.versions()
    assert info.trigger == "bootstrap" and info.parent is None and info.current
    assert info.created_at == 12.5
    assert (reg.path("v000001") / "weights.safetensors").read_bytes() == b"prior"


def test_add_records_lineage(tmp_path: Path, prior: Path) -> None:
    reg = Registry(tmp_path / "reg")
    reg.bootstrap(prior)
    cand = _model(tmp_path / "cand", b"c1")
    v = reg.add(
        cand,
        parent="v000001",
        trigger="drift",
        data_used={"labels": 25},
        evaluation={"candidate_acc": 0.9, "serving_acc": 0.6},
    )
    assert v == "v000002"
    assert reg.current() == "v000001"  # added is not served
    lineage = json.loads((reg.path(v) / "lineage.json").read_text())
    assert lineage["parent"] == "v000001" and lineage["trigger"] == "drift"
    assert lineage["data_used"] == {"labels": 25}
    assert lineage["evaluation"]["candidate_acc"] == 0.9
    assert lineage["status"] == "good"
    reg.promote(v)
    assert reg.current() == v
    assert reg.info(v).as_dict()["current"] is True


def test_unknown_parent_and_version(tmp_path: Path, prior: Path) -> None:
    reg = Registry(tmp_path / "reg")
    with pytest.raises(RegistryError, match="unknown version"):
        reg.add(prior, parent="v000009", trigger="x")
    with pytest.raises(RegistryError, match="not a version"):
        reg.path("../etc")
    with pytest.raises(RegistryError, match="nothing is served"):
        reg.rollback()


def test_rollback_chain(tmp_path: Path, prior: Path) -> None:
    reg = Registry(tmp_path / "reg")
    reg.bootstrap(prior)
    for i in (2, 3):
        v = reg.add(_model(tmp_path / f"c{i}", f"c{i}".encode()), reg.current(), "drift")
        reg.promote(v)
    assert reg.current() == "v000003"
    assert reg.rollback() == "v000002"
    assert reg.rollback() == "v000001"
    with pytest.raises(RegistryError, match="no earlier good version"):
        reg.rollback()
    statuses = {i.version: i.status for i in reg.versions()}
    assert statuses == {"v000001": "good", "v000002": "rolled_back", "v000003": "rolled_back"}
    # a new accepted version after a rollback rolls back to the served one, not a bad one
    v4 = reg.add(_model(tmp_path / "c4", b"c4"), reg.current(), "alert")
    reg.promote(v4)
    assert reg.rollback() == "v000001"
    # statuses survive reopening, and lineage.json mirrors them
    reg2 = Registry(tmp_path / "reg")
    assert reg2.current() == "v000001"
    assert json.loads((reg2.path("v000004") / "lineage.json").read_text())["status"] == (
        "rolled_back"
    )


def test_rollback_skips_unpromoted_and_corrupt(tmp_path: Path, prior: Path) -> None:
    reg = Registry(tmp_path / "reg")
    reg.bootstrap(prior)
    v2 = reg.add(_model(tmp_path / "c2", b"c2"), "v000001", "drift")
    reg.promote(v2)
    reg.add(_model(tmp_path / "c3", b"c3"), v2, "drift")  # never promoted
    v4 = reg.add(_model(tmp_path / "c4", b"c4"), v2, "drift")
    reg.promote(v4)
    (reg.path(v2) / "weights.safetensors").write_bytes(b"rot")
    assert reg.rollback() == "v000001"


def test_promote_corrupt_refused(tmp_path: Path, prior: Path) -> None:
    reg = Registry(tmp_path / "reg")
    reg.bootstrap(prior)
    v2 = reg.add(_model(tmp_path / "c2", b"c2"), "v000001", "drift")
    (reg.path(v2) / "weights.safetensors").write_bytes(b"rot")
    with pytest.raises(ChecksumError, match=r"weights\.safetensors"):
        reg.promote(v2)
    assert reg.current() == "v000001"


def test_leftovers_cleaned_on_open(tmp_path: Path, prior: Path) -> None:
    reg = Registry(tmp_path / "reg")
    reg.bootstrap(prior)
    root = tmp_path / "reg"
    (root / ".tmp-stage-v000002").mkdir()
    (root / ".tmp-stage-v000002" / "weights.safetensors").write_bytes(b"half")
    (root / ".tmp-current.abc").write_text("{")
    Registry(root)
    assert sorted(p.name for p in root.iterdir()) == ["current", "v000001"]


def test_crash_between_add_and_promote_at_bootstrap(tmp_path: Path, prior: Path) -> None:
    reg = Registry(tmp_path / "reg")
    reg.add(prior, parent=None, trigger="bootstrap")
    assert Registry(tmp_path / "reg").bootstrap(prior) == "v000001"


_CHILD = r"""
import sys
from pathlib import Path
from regulator import modelfolder
from regulator.registry import Registry
root, prior, work = map(Path, sys.argv[1:4])
reg = Registry(root)
reg.bootstrap(prior)
i = 0
print("ready", flush=True)
while True:
    i += 1
    src = work / f"c{i}"
    src.mkdir()
    (src / "weights.safetensors").write_bytes(b"x" * 100_000 + str(i).encode())
    modelfolder.write_manifest(src)
    v = reg.add(src, reg.current(), "drift")
    reg.promote(v)
    if i % 3 == 0:
        reg.rollback()
"""


@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3])
def test_kill_9_leaves_a_consistent_registry(tmp_path: Path, prior: Path, delay: float) -> None:
    root = tmp_path / "reg"
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(root), str(prior), str(work)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    reg = Registry(root)
    cur = reg.current()
    assert cur is not None
    reg.verify(cur)
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    for info in reg.versions():
        reg.verify(info.version)
    # still usable after the crash
    v = reg.add(prior, cur, "manual")
    reg.promote(v)
    assert reg.current() == v


def test_prune_keeps_newest_served_first_and_current(tmp_path: Path, prior: Path) -> None:
    reg = Registry(tmp_path / "registry", clock=lambda: 0.0)
    reg.bootstrap(prior)
    for i in range(2, 11):  # v2..v10; only the even ones ever served
        v = reg.add(_model(tmp_path / f"m{i}", f"w{i}".encode()), parent=None, trigger="t")
        if i % 2 == 0:
            reg.promote(v)
    reg.promote("v000007")  # served now, and not among the newest
    gone = reg.prune(keep_last=2, keep_served=2)
    kept = [v.version for v in reg.versions()]
    # newest 2 (9, 10), newest 2 that served (8, 10), the first (1), the served one (7)
    assert kept == ["v000001", "v000007", "v000008", "v000009", "v000010"], (kept, gone)
    assert set(gone) == {"v000002", "v000003", "v000004", "v000005", "v000006"}
    assert reg.current() == "v000007"
    assert not [p for p in (tmp_path / "registry").iterdir() if p.name.startswith(".tmp-")]
    new = reg.add(_model(tmp_path / "m11", b"w11"), parent=None, trigger="t")
    assert new == "v000011"  # numbers are never given twice


def test_open_serving_quarantines_and_never_reuses_a_number(tmp_path: Path, prior: Path) -> None:
    reg = Registry(tmp_path / "registry", clock=lambda: 0.0)
    reg.bootstrap(prior)
    v2 = reg.add(_model(tmp_path / "m2", b"w2"), parent="v000001", trigger="t")
    reg.promote(v2)
    (tmp_path / "registry" / v2 / "weights.safetensors").write_bytes(b"bad")
    reg = Registry(tmp_path / "registry", clock=lambda: 0.0)
    served = reg.open_serving(prior, lambda v: v)
    assert served == "v000001" and reg.current() == "v000001"
    assert [p["what"] for p in reg.problems] == ["v000002"]
    assert len(list((tmp_path / "registry" / "quarantine").iterdir())) == 1
    assert reg.add(_model(tmp_path / "m3", b"w3"), parent=None, trigger="t") == "v000003"


# -- kill -9 inside a registry write, at each named point ------------------------------------

_AT_POINT = r"""
import sys
from pathlib import Path
from regulator import modelfolder
from regulator.registry import Registry
root, prior, work = map(Path, sys.argv[1:4])
reg = Registry(root)
if sys.argv[4] == "damaged":  # a damaged served version: opening quarantines it
    reg.open_serving(prior, lambda v: v)
    raise SystemExit(0)
reg.bootstrap(prior)
for i in range(1, 7):
    src = work / f"c{i}"
    src.mkdir()
    (src / "weights.safetensors").write_bytes(b"x" * 100_000 + str(i).encode())
    modelfolder.write_manifest(src)
    reg.promote(reg.add(src, reg.current(), "drift"))
    if i % 3 == 0:
        reg.rollback()
    reg.prune(keep_last=2, keep_served=2)
"""

_POINT_CASES = [
    ("add.start@2", "kill"),
    ("add.start@2", "kill+0.002"),  # lands inside the copy of the model files
    ("add.copied@2", "kill"),
    ("add.staged@3", "kill"),
    ("add.renamed@2", "kill"),
    ("commit.before@3", "kill"),
    ("commit.written@2", "kill"),
    ("sync.lineage@1", "kill"),
    ("prune.renamed@1", "kill"),
    ("prune.deleted@1", "kill"),
    ("quarantine.moved@1", "kill"),
]


def _consistent(root: Path, prior: Path, damaged: bool) -> Registry:
    """Reopen after the kill as the daemon does: nothing half-written, nothing that
    looks damaged (unless it was), every version sound, lineage status mirrors the
    pointer, the served one verifies, and the registry still takes writes."""
    reg = Registry(root)
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    cur = reg.open_serving(prior, lambda v: v)
    assert reg.current() == cur
    assert bool(reg.problems) == damaged, reg.problems
    for info in reg.versions():
        reg.verify(info.version)
        lineage = json.loads((reg.path(info.version) / "lineage.json").read_text())
        assert lineage["version"] == info.version and lineage["status"] == info.status
    reg.verify(cur)
    v = reg.add(prior, cur, "manual")
    reg.promote(v)
    assert reg.current() == v
    return reg


@pytest.mark.parametrize(("point", "action"), _POINT_CASES)
def test_kill_9_at_a_named_point_of_a_write(
    tmp_path: Path, prior: Path, point: str, action: str
) -> None:
    root, work = tmp_path / "reg", tmp_path / "work"
    work.mkdir()
    mode = "writes"
    if point.startswith("quarantine"):
        reg = Registry(root)
        reg.bootstrap(prior)
        reg.promote(reg.add(_model(tmp_path / "c", b"c"), "v000001", "drift"))
        (root / "v000002" / "weights.safetensors").write_bytes(b"rot")
        mode = "damaged"
    proc = subprocess.run(
        [sys.executable, "-c", _AT_POINT, str(root), str(prior), str(work), mode],
        env={**os.environ, "PYTHONPATH": os.getcwd(), "REGULATOR_REGISTRY_FAULT":
             f"{point}:{action}"},
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert f"registry fault point {point.split('@')[0]} reached" in proc.stderr.decode()
    reg = _consistent(root, prior, damaged=mode == "damaged")
    if mode == "damaged":  # the kill came after the move: the damaged one stays out
        assert "v000002" not in [i.version for i in reg.versions()]
        assert reg.add(prior, None, "t") == "v000004"  # its number is never given again


def test_fault_point_names_and_actions_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from regulator.registry import faultpoint

    monkeypatch.setenv(faultpoint.ENV, "add.nowhere:kill")
    with pytest.raises(ValueError, match=r"unknown point 'add.nowhere' \(one of add.start"):
        faultpoint.reached("add.start")
    monkeypatch.setenv(faultpoint.ENV, "add.start:explode")
    with pytest.raises(ValueError, match="unknown action 'explode'"):
        faultpoint.reached("add.start")
    monkeypatch.setenv(faultpoint.ENV, "add.copied:kill")
    faultpoint.reached("add.start")  # another point: nothing happens


# -- the wall clock jumping --------------------------------------------------------------------


def test_wall_clock_jumps_change_no_decision(tmp_path: Path, prior: Path) -> None:
    """created_at is only a stamp: numbers, rollback, retention and quarantine go by
    version number, whichever way the clock jumps (forward a year, back two)."""
    times = iter([1.0e9, 1.0e9 + 3.2e7, 1.0e9 - 3.2e7, 1.0e9 - 6.4e7, 5.0])
    reg = Registry(tmp_path / "reg", clock=lambda: next(times))
    reg.bootstrap(prior)
    for i in range(2, 6):
        reg.promote(reg.add(_model(tmp_path / f"c{i}", f"c{i}".encode()), reg.current(), "t"))
    stamps = [i.created_at for i in reg.versions()]
    assert [i.version for i in reg.versions()] == [f"v00000{i}" for i in range(1, 6)]
    assert stamps != sorted(stamps)  # the clock did jump back
    assert reg.rollback() == "v000004"
    assert reg.prune(keep_last=2, keep_served=1) == ["v000002", "v000003"]
    # two quarantines within one clock tick (or onto an earlier stamp) keep both
    for v in ("v000004", "v000005"):
        (tmp_path / "reg" / v / "weights.safetensors").write_bytes(b"rot")
    import regulator.registry.quarantine as q

    frozen = q.time.time_ns
    q.time.time_ns = lambda: 42  # type: ignore[assignment]
    try:
        reg2 = Registry(tmp_path / "reg")
        assert reg2.open_serving(prior, lambda v: v) == "v000001"
    finally:
        q.time.time_ns = frozen  # type: ignore[assignment]
    assert len(list((tmp_path / "reg" / "quarantine").iterdir())) == 2


def test_a_commit_rewrites_only_the_lineages_it_changes(
    tmp_path: Path, prior: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Promote and rollback used to read every version's lineage.json (a cost that grew
    with the registry, on the recalibration thread); now only those whose status moved.
    Opening the registry still repairs every mirror (after a crash)."""
    from regulator.registry import lineage as lineage_mod

    reg = Registry(tmp_path / "reg")
    reg.bootstrap(prior)
    for i in range(2, 8):
        reg.promote(reg.add(_model(tmp_path / f"c{i}", f"c{i}".encode()), reg.current(), "drift"))
    read: list[str] = []
    real_read = lineage_mod.atomic.read_json

    def counting(path: Path) -> object:
        read.append(Path(path).parent.name)
        return real_read(path)

    monkeypatch.setattr(lineage_mod.atomic, "read_json", counting)
    reg.promote(reg.add(_model(tmp_path / "c8", b"c8"), reg.current(), "drift"))
    assert read == []  # nothing changed status
    assert reg.rollback() == "v000007"
    assert read == ["v000008"]  # the rolled-back one
    monkeypatch.undo()
    # a mirror damaged behind the registry's back is repaired when it is opened
    path = reg.path("v000008") / "lineage.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "status": "good"}))
    Registry(tmp_path / "reg")
    assert json.loads(path.read_text())["status"] == "rolled_back"
