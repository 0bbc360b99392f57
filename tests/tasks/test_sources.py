from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from regulator.errors import ConfigError, InputError, UnknownNameError
from regulator.tasks import FeedbackChannel, SourceSample, make_source
from regulator.tasks.formats import save_csv, save_npz
from regulator.tasks.sources import HttpSource, ReplaySource, SimulatedSource


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, dt: float) -> None:
        self.slept.append(dt)
        self.now += dt


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    a, b = tmp_path / "a.npz", tmp_path / "b.csv"
    save_npz(a, np.arange(10, dtype=np.float32).reshape(5, 2, 1), np.arange(5) % 2)
    save_csv(b, np.arange(10, 16, dtype=np.float32).reshape(3, 2, 1), np.array([1, 1, 0]))
    return [a, b]


def test_replay_delivers_every_sample_once_in_order(files: list[Path]) -> None:
    src = make_source("replay", paths=files)
    out = list(src)
    assert [s.sample_id for s in out] == [f"a:{i}" for i in range(5)] + [f"b:{i}" for i in range(3)]
    assert [float(s.x[0, 0]) for s in out] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]
    assert [s.label for s in out] == [0, 1, 0, 1, 0, 1, 1, 0]
    assert len(src) == 8 and len({s.sample_id for s in out}) == 8  # type: ignore[arg-type]


def test_replay_paces_at_the_given_rate(files: list[Path]) -> None:
    clock = FakeClock()
    src = ReplaySource(files, rate_hz=4.0, clock=clock, sleep=clock.sleep)
    ts = [s.t for s in src]
    assert ts == pytest.approx([i / 4.0 for i in range(8)])
    fast = FakeClock()
    assert [s.t for s in ReplaySource(files, clock=fast, sleep=fast.sleep)] == [0.0] * 8
    assert fast.slept == []


def test_replay_stops_when_closed_and_rejects_mismatched_files(
    files: list[Path], tmp_path: Path
) -> None:
    src = ReplaySource(files)
    it = iter(src)
    next(it)
    src.close()
    assert list(it) == []
    other = tmp_path / "c.npz"
    save_npz(other, np.zeros((2, 3, 1)), np.array([0, 1]))
    with pytest.raises(InputError, match="disagree"):
        ReplaySource([files[0], other])


def test_simulated_source_reports_change_points() -> None:
    src = SimulatedSource(
        "nanosensor",
        {"kind": "abrupt", "change_points": [3]},
        seed=0,
        n=6,
        family_config={"n_sensors": 2, "length": 4},
    )
    out = list(src)
    assert [s.sample_id for s in out] == [f"sim-{i}" for i in range(6)]
    assert out[0].x.shape == (2, 4) and isinstance(out[0].label, int)
    assert src.change_points() == [3]


def test_http_push_validates_and_bounds() -> None:
    src = HttpSource(n_channels=2, length=3, maxsize=2)
    assert src.push(np.zeros((2, 3)), sample_id="s1") == "s1"
    auto = src.push(np.ones((2, 3)))
    assert isinstance(auto, str) and len(auto) == 32
    with pytest.raises(InputError, match="full"):
        src.push(np.zeros((2, 3)))
    with pytest.raises(InputError, match="shape"):
        src.push(np.zeros((3, 2)))
    got = src.get(timeout=0)
    assert got is not None and got.sample_id == "s1" and got.label is None
    with pytest.raises(InputError, match="non-finite"):
        src.push(np.full((2, 3), np.nan))


def test_http_is_thread_safe_and_iteration_ends_on_close() -> None:
    src = HttpSource(n_channels=1, length=1, maxsize=1000)
    threads = [
        threading.Thread(target=lambda k=k: [src.push([[float(k)]]) for _ in range(50)])
        for k in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    src.close()
    got = list(src)
    assert len(got) == 200 and len({s.sample_id for s in got}) == 200
    with pytest.raises(InputError, match="closed"):
        src.push([[0.0]])


def sample(i: int) -> SourceSample:
    return SourceSample(f"s{i}", np.zeros((1, 1), dtype=np.float32), i, float(i))


def test_feedback_delay_holds_labels_back() -> None:
    fb = FeedbackChannel(delay=3)
    released: list[tuple[int, list[tuple[str, object]]]] = []
    for i, s in enumerate(fb.wrap(sample(i) for i in range(10))):
        assert s.label is None  # ground truth never rides along
        released.append((i, fb.pop_ready()))
    for i, ready in released:
        assert ready == ([(f"s{i - 3}", i - 3)] if i >= 3 else [])
    assert fb.flush() == [("s7", 7), ("s8", 8), ("s9", 9)]


def test_feedback_fraction_labels_about_that_share() -> None:
    fb = FeedbackChannel(delay=0, fraction=0.3, seed=1)
    labels = []
    for _ in fb.wrap(sample(i) for i in range(2000)):
        labels += fb.pop_ready()
    assert 0.25 < len(labels) / 2000 < 0.35
    assert [sid for sid, _ in labels] == sorted(
        (sid for sid, _ in labels), key=lambda s: int(s[1:])
    )
    none = FeedbackChannel(fraction=0.0)
    for _ in none.wrap(sample(i) for i in range(10)):
        assert none.pop_ready() == []


def test_make_source_errors() -> None:
    with pytest.raises(UnknownNameError, match="valid: http, replay, simulated"):
        make_source("kafka")
    with pytest.raises(ConfigError):
        make_source("http", n_channels=1)
    with pytest.raises(ConfigError):
        FeedbackChannel(delay=-1)
    with pytest.raises(ConfigError):
        ReplaySource([], rate_hz=1.0)
