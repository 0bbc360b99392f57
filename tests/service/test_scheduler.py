"""The scheduler: coalescing, idempotent run_now, missed/failed/skipped reporting."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from regulator.errors import ConfigError, UnknownNameError
from regulator.service.executor import LocalExecutor, create_executor
from regulator.service.scheduler import Scheduler


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, job_id: str, outcome: str) -> None:
        with self.lock:
            self.items.append((job_id, outcome))


def wait_for(pred: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def sched(events: Events) -> Iterator[Scheduler]:
    s = Scheduler(on_event=events, misfire_grace_time=30)
    yield s
    s.shutdown(wait=True)


def test_run_now_is_idempotent_while_pending(sched: Scheduler) -> None:
    release = threading.Event()
    started = threading.Event()
    calls: list[int] = []

    def job() -> None:
        calls.append(1)
        started.set()
        release.wait(5)

    sched.start()
    assert sched.run_now("recal:now", job)
    assert started.wait(5)
    assert sched.pending("recal:now")
    assert not sched.run_now("recal:now", job)  # running: refused
    assert [j["id"] for j in sched.jobs()] == ["recal:now"]
    release.set()
    assert wait_for(lambda: not sched.pending("recal:now"))
    assert sched.run_now("recal:now", job)  # finished: accepted again
    assert wait_for(lambda: len(calls) == 2)


def test_run_now_before_start_is_queued_once(sched: Scheduler) -> None:
    calls: list[int] = []
    assert sched.run_now("x", lambda: calls.append(1))
    assert not sched.run_now("x", lambda: calls.append(1))
    sched.start()
    assert wait_for(lambda: not sched.pending("x"))
    time.sleep(0.05)
    assert calls == [1]


def test_coalescing_runs_missed_periods_once(sched: Scheduler, events: Events) -> None:
    calls: list[float] = []
    sched.start(paused=True)
    sched.add_interval("tick", 1.0, lambda: calls.append(time.monotonic()))
    time.sleep(3.5)  # three periods pass while paused
    sched.resume()
    assert wait_for(lambda: len(calls) >= 1)
    # The next regular run is due ~0.5 s after the resume (periods fall on a 1 s grid):
    # seconds of margin either side, so machine load cannot make this flaky.
    time.sleep(0.2)
    assert len(calls) == 1
    assert events.items == []


def test_missed_is_reported(events: Events) -> None:
    s = Scheduler(on_event=events, misfire_grace_time=1)
    try:
        s.start(paused=True)
        s.add_interval("late", 1.5, lambda: None)
        time.sleep(2.8)  # the only due run is ~1.3 s late, beyond the grace time
        s.resume()
        assert wait_for(lambda: ("late", "missed") in events.items)
    finally:
        s.shutdown()


def test_failure_is_reported_and_job_stays(sched: Scheduler, events: Events) -> None:
    def boom() -> None:
        raise RuntimeError("boom")

    sched.start()
    sched.add_interval("bad", 0.05, boom, start_now=True)
    assert wait_for(lambda: events.items.count(("bad", "failed")) >= 2)
    assert "bad" in [j["id"] for j in sched.jobs()]


def test_group_excludes_concurrent_runs(sched: Scheduler, events: Events) -> None:
    release = threading.Event()
    started = threading.Event()

    def slow() -> None:
        started.set()
        release.wait(5)

    calls: list[int] = []
    sched.start()
    assert sched.run_now("recal:now", slow, group="recal")
    assert started.wait(5)
    sched.add_interval("recal:cron", 0.05, lambda: calls.append(1), group="recal", start_now=True)
    assert wait_for(lambda: ("recal:cron", "skipped") in events.items)
    assert calls == []
    release.set()
    assert wait_for(lambda: calls)


def test_cron_and_replace(sched: Scheduler) -> None:
    sched.add_cron("nightly", "0 3 * * *", lambda: None)
    sched.add_cron("nightly", "30 4 * * *", lambda: None)  # same id replaces
    sched.start()
    [job] = sched.jobs()
    assert job["id"] == "nightly" and job["next_run"] is not None
    assert time.gmtime(job["next_run"]).tm_hour == 4
    with pytest.raises(ConfigError, match="bad crontab"):
        sched.add_cron("bad", "61 * * * *", lambda: None)
    with pytest.raises(ConfigError, match="must be > 0"):
        sched.add_interval("bad", 0, lambda: None)
    with pytest.raises(ConfigError, match="whole number"):
        Scheduler(misfire_grace_time=0.5)  # type: ignore[arg-type]
    sched.remove_all()
    assert sched.jobs() == []
    sched.remove("nope")


def test_shutdown_idempotent() -> None:
    s = Scheduler()
    s.shutdown()
    s.start()
    assert s.running
    s.shutdown(wait=False)
    s.shutdown()
    assert not s.running


def test_executor_by_name() -> None:
    ex = create_executor("local", max_workers=2)
    assert isinstance(ex, LocalExecutor)
    assert ex.submit(lambda: "ok").result(timeout=5) == "ok"
    ex.shutdown()
    with pytest.raises(UnknownNameError, match="valid: inline, local, process, ray"):
        create_executor("dask")
