"""The state directory: event log, label buffer, monitor snapshots survive reopening."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from regulator.errors import ConfigError
from regulator.service.state import EventLog, JsonStore, Label, LabelBuffer, StateDir


def test_event_log_survives_reopen(tmp_path: Path) -> None:
    p = tmp_path / "events.jsonl"
    log = EventLog(p, clock=lambda: 5.0)
    log.append("detection", monitor="drift", score=3.5)
    log.append("decision", rule="r1", action="recalibrate", reasons=["drift"])
    log.close()
    log2 = EventLog(p)
    kinds = [e["kind"] for e in log2.recent()]
    assert kinds == ["detection", "decision"]
    assert log2.recent(kinds=["decision"])[0]["fields"]["reasons"] == ["drift"]
    assert log2.read_all()[0] == {
        "ts": 5.0,
        "kind": "detection",
        "fields": {"monitor": "drift", "score": 3.5},
    }
    log2.close()


def test_event_log_torn_line_dropped(tmp_path: Path) -> None:
    p = tmp_path / "events.jsonl"
    log = EventLog(p)
    log.append("alert", fingerprint="abc")
    log.close()
    with open(p, "a") as f:
        f.write('{"ts": 1, "kind": "dec')  # kill -9 mid-write
    log2 = EventLog(p)
    log2.append("rollback", to="v000001")
    log2.close()
    lines = p.read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["alert", "rollback"]


def test_event_log_nan_and_bad_kind(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.jsonl")
    assert log.append("detection", score=math.nan)["fields"]["score"] is None
    with pytest.raises(ValueError, match="lower-case"):
        log.append("Bad Kind")
    log.close()


def test_event_log_rotates(tmp_path: Path) -> None:
    p = tmp_path / "e.jsonl"
    log = EventLog(p, max_bytes=200)
    for i in range(20):
        log.append("job", i=i)
    log.close()
    assert (tmp_path / "e.jsonl.1").exists()
    assert p.stat().st_size <= 200 + 100
    assert len(log.recent(100)) == 20


def test_label_buffer_survives_reopen(tmp_path: Path) -> None:
    p = tmp_path / "labels.jsonl"
    buf = LabelBuffer(p)
    buf.add(
        [
            Label("a", [[0.1, 0.2], [0.3, 0.4]], 1, 10.0, env={"temp": 20}),
            Label("b", [0.5], 0, 11.0),
        ]
    )
    buf.add([Label("c", [0.6], 1, 12.0)])
    buf.close()
    buf2 = LabelBuffer(p)
    assert [lab.sample_id for lab in buf2.all()] == ["a", "b", "c"]
    assert np.allclose(buf2.all()[0].x, [[0.1, 0.2], [0.3, 0.4]])
    assert buf2.all()[0].env == {"temp": 20}
    assert buf2.class_counts() == {0: 1, 1: 2}
    assert buf2.class_counts(since=11.5) == {1: 1}
    assert [lab.sample_id for lab in buf2.labelled_since(11.0)] == ["b", "c"]
    assert "a" in buf2 and len(buf2) == 3
    buf2.close()


def test_label_buffer_relabel_replaces(tmp_path: Path) -> None:
    buf = LabelBuffer(tmp_path / "l.jsonl")
    buf.add([Label("a", [0.0], 0, 1.0), Label("b", [0.0], 0, 1.0)])
    buf.add([Label("a", [0.0], 2, 2.0)])
    assert [(lab.sample_id, lab.y) for lab in buf.all()] == [("b", 0), ("a", 2)]
    buf.close()
    buf2 = LabelBuffer(tmp_path / "l.jsonl")
    assert len(buf2.all()) == 2
    buf2.close()


def test_label_buffer_bounded_and_compacted(tmp_path: Path) -> None:
    p = tmp_path / "l.jsonl"
    buf = LabelBuffer(p, max_samples=10)
    for i in range(55):
        buf.add([Label(f"s{i}", [float(i)], i % 3, float(i))])
    assert len(buf) == 10
    assert buf.all()[0].sample_id == "s45"
    buf.close()
    assert len(p.read_text().splitlines()) <= 20
    buf2 = LabelBuffer(p, max_samples=10)
    assert [lab.sample_id for lab in buf2.all()] == [f"s{i}" for i in range(45, 55)]
    buf2.close()


def test_label_buffer_torn_and_bad_lines(tmp_path: Path) -> None:
    p = tmp_path / "l.jsonl"
    buf = LabelBuffer(p)
    buf.add([Label("a", [1.0], 1, 1.0)])
    buf.close()
    with open(p, "a") as f:
        f.write('{"sample_id": "x"}\n')  # no fields: skipped
        f.write('{"sample_id": "b", "x": [1')  # torn
    buf2 = LabelBuffer(p)
    assert [lab.sample_id for lab in buf2.all()] == ["a"]
    buf2.close()
    assert len(p.read_text().splitlines()) == 1  # compacted away


def test_label_buffer_refuses_nan_without_writing(tmp_path: Path) -> None:
    p = tmp_path / "l.jsonl"
    buf = LabelBuffer(p)
    with pytest.raises(ValueError):
        buf.add([Label("a", [1.0], 1, 1.0), Label("b", [math.inf], 1, 1.0)])
    assert len(buf) == 0 and p.read_text() == ""
    buf.close()


def test_json_store(tmp_path: Path) -> None:
    store = JsonStore(tmp_path / "monitors")
    assert store.load("ood", default={}) == {}
    store.save("ood", {"threshold": 0.01})
    assert JsonStore(tmp_path / "monitors").load("ood") == {"threshold": 0.01}
    assert store.names() == ["ood"]
    with pytest.raises(ValueError, match="bad state name"):
        store.save("../x", {})
    (tmp_path / "monitors" / "broken.json").write_text("{")
    assert store.load("broken") is None


def test_state_dir_lock(tmp_path: Path) -> None:
    st = StateDir(tmp_path / "state")
    with pytest.raises(ConfigError, match="in use by another process"):
        StateDir(tmp_path / "state")
    st.events.append("start")
    st.close()
    st2 = StateDir(tmp_path / "state")
    assert st2.events.recent()[0]["kind"] == "start"
    assert st2.registry_dir == tmp_path / "state" / "registry"
    st2.close()


def test_event_log_keeps_the_configured_number_of_rotated_files(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl", clock=lambda: 1.0, max_bytes=4096, keep_files=3)
    for i in range(500):
        log.append("job", i=i, pad="x" * 100)
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["events.jsonl", "events.jsonl.1", "events.jsonl.2", "events.jsonl.3"]
    assert all(p.stat().st_size <= 4096 + 200 for p in tmp_path.iterdir())


def test_a_write_that_meets_a_full_disk_leaves_no_torn_line(tmp_path: Path) -> None:
    """/dev/full answers every write with ENOSPC: the append is refused whole."""
    from regulator.errors import StorageFullError
    from regulator.service.storage import AppendFile

    f = AppendFile(Path("/dev/full"), None, "label")
    with pytest.raises(StorageFullError):
        f.write_lines(['{"a": 1}'])
    f.close()


def test_labels_refused_past_the_reserve_and_taken_again_after(tmp_path: Path) -> None:
    from regulator.errors import StorageFullError
    from regulator.service.storage import DiskGuard

    guard = DiskGuard(tmp_path, reserve_bytes=1 << 62)
    buf = LabelBuffer(tmp_path / "labels.jsonl", guard=guard)
    with pytest.raises(StorageFullError):
        buf.add([Label("a", [1.0, 2.0], 0, 0.0)])
    assert len(buf) == 0 and guard.full
    guard.reserve_bytes = 0  # space returns
    assert buf.add([Label("b", [1.0, 2.0], 0, 0.0)]) == 1
    assert not guard.full
    buf.close()
    assert [lab.sample_id for lab in LabelBuffer(tmp_path / "labels.jsonl").all()] == ["b"]


def test_events_wait_for_space_and_are_written_when_it_returns(tmp_path: Path) -> None:
    from regulator.service.storage import DiskGuard

    guard = DiskGuard(tmp_path, reserve_bytes=1 << 62)
    log = EventLog(tmp_path / "events.jsonl", clock=lambda: 1.0, guard=guard)
    log.append("job", n=1)
    log.append("job", n=2)
    assert log.backlog == 2 and log.recent(5)[-1]["fields"] == {"n": 2}
    guard.reserve_bytes = 0
    log.append("job", n=3)
    assert log.backlog == 0
    log.close()
    assert [e["fields"]["n"] for e in EventLog(tmp_path / "events.jsonl").read_all()] == [1, 2, 3]


def test_labels_are_group_committed_and_all_survive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent adds share fsyncs (group commit), and every acknowledged label is in
    the file when it is read again."""
    import threading
    import time

    import regulator.service.storage as storage

    real = storage.os.fsync
    calls = []

    def slow_fsync(fd: int) -> None:
        calls.append(fd)
        time.sleep(0.01)  # a disk: long enough for callers to queue behind a write
        real(fd)

    path = tmp_path / "labels.jsonl"
    buf = LabelBuffer(path)
    monkeypatch.setattr(storage.os, "fsync", slow_fsync)
    acked: list[str] = []

    def client(c: int) -> None:
        for j in range(5):
            sid = f"c{c}-{j}"
            buf.add([Label(sid, [float(c), float(j)], c % 2, t=float(j))])
            acked.append(sid)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    monkeypatch.setattr(storage.os, "fsync", real)
    buf.close()
    assert len(acked) == 40 and len(calls) < 40  # fewer fsyncs than acknowledged adds
    again = LabelBuffer(path)
    assert sorted(lab.sample_id for lab in again.all()) == sorted(acked)
    again.close()


@pytest.mark.slow
def test_retention_holds_the_state_directory_bounded_cycle_after_cycle(tmp_path: Path) -> None:
    """Many rotations and compactions, with a restart half-way: after every write the
    event files and the label file stay under their bounds (so one rotation, or one
    compaction, followed by growth would fail here), and the old data really go."""
    from regulator.service.storage import dumps_line, tree_bytes

    max_bytes, files, max_labels = 4096, 2, 20
    pad = "x" * 150
    line_bytes = len(dumps_line(Label("s99999", [0.25] * 8, 1, 1e5).to_json())) + 1
    # a file is rotated after the write that crosses max_bytes: each of the live file
    # and the rotated ones may hold one line more (its time stamp's digits vary)
    event_line = len(dumps_line({"ts": 1e9 + 0.123456789, "kind": "job",
                                 "fields": {"i": 99999, "pad": pad}})) + 1 + 8  # fmt: skip
    event_bound = (files + 1) * (max_bytes + event_line)
    label_bound = (2 * max_labels + 3) * line_bytes  # compacted past 2x max_labels lines
    rotations = compactions = 0
    k = 0
    for _run in range(2):
        st = StateDir(
            tmp_path / "state",
            max_labels=max_labels,
            event_log_max_bytes=max_bytes,
            event_log_files=files,
        )
        for _ in range(300):
            k += 1
            st.events.append("job", i=k, pad=pad)
            st.labels.add([Label(f"s{k}", [0.25] * 8, k % 3, float(k))])
            events = sorted(p.name for p in st.root.glob("events.jsonl*"))
            assert events[: files + 1] == events  # never more than the live file + files
            assert sum(p.stat().st_size for p in st.root.glob("events.jsonl*")) <= event_bound
            assert (st.root / "labels.jsonl").stat().st_size <= label_bound
            assert tree_bytes(st.root) <= event_bound + label_bound + 4096
            assert len(st.labels) <= max_labels
        rotations += st.events.rotations
        compactions += st.labels.compactions
        st.close()
    assert rotations >= 20 and compactions >= 20
    oldest = json.loads((tmp_path / "state" / f"events.jsonl.{files}").read_text().split("\n")[0])
    assert oldest["fields"]["i"] > k - 3 * max_bytes // 150  # only the newest events kept
    kept = LabelBuffer(tmp_path / "state" / "labels.jsonl", max_samples=max_labels)
    assert [lab.sample_id for lab in kept.all()] == [f"s{i}" for i in range(k - 19, k + 1)]
    kept.close()


def test_rotated_event_files_past_a_lowered_limit_are_removed(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl", max_bytes=4096, keep_files=4)
    for i in range(500):
        log.append("job", i=i, pad="x" * 100)
    log.close()
    assert (tmp_path / "events.jsonl.4").exists()
    (tmp_path / "events.jsonl.bak").write_text("not ours")
    log = EventLog(tmp_path / "events.jsonl", max_bytes=4096, keep_files=1)
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["events.jsonl", "events.jsonl.1", "events.jsonl.bak"]
