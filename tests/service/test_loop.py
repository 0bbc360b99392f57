"""The one loop on a :class:`SampleClock`: replay's order of serving, labels and ticks
although labels arrive from outside the loop, and a recalibration waited for."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from regulator.service.loop import SampleClock, ServiceLoop
from regulator.tasks.sources import FeedbackChannel, SourceSample


class Recorder:
    """The part of a Runtime the loop uses; logs each call with the clock's time."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.calls: list[tuple[str, float]] = []
        self.job: threading.Event | None = None  # a recalibration "running" until set

    def process_batch(
        self, items: Any, t: float | None = None, checked: bool = False, defer: bool = False
    ) -> Any:
        self.calls.append(("serve:" + ",".join(sid for sid, _ in items), self.clock()))
        return [{"sample_id": sid} for sid, _ in items]

    def flush(self) -> None:
        pass

    def add_labels(self, items: Any, t: float | None = None) -> dict[str, Any]:
        items = list(items)
        self.calls.append(("labels:" + ",".join(str(sid) for sid, *_ in items), self.clock()))
        return {"accepted": len(items)}

    def tick(self, t: float | None = None) -> None:
        self.calls.append(("tick", self.clock()))

    def recalibration_pending(self, key: str | None = None) -> bool:
        return self.job is not None and not self.job.is_set()


def _sample(i: int, t: float) -> SourceSample:
    return SourceSample(str(i), np.zeros((1, 1)), i % 2, t)


def test_labels_at_a_samples_time_come_before_its_tick_as_in_replay() -> None:
    # replay: serve, the labels due, tick; here the labels come later, over HTTP
    replay_rt = Recorder(None)
    sim = [0.0]
    replay_rt.clock = lambda: sim[0]
    replay = ServiceLoop(replay_rt, FeedbackChannel(delay=1, fraction=1.0), tick_every_s=0.5)
    for i in range(3):
        sim[0] = i * 0.25
        replay.serve([_sample(i, sim[0])])

    clock = SampleClock()
    rt = Recorder(clock)
    loop = ServiceLoop(rt, None, tick_every_s=0.5, clock=clock)
    fb = FeedbackChannel(delay=1, fraction=1.0)
    for i in range(3):
        s = _sample(i, i * 0.25)
        fb.observe(s)
        loop.serve([s])  # on the samples' clock t is the sample's own
        loop.between_rounds()  # nothing: time moves only with the samples
        ready = fb.pop_ready()
        if ready:
            loop.add_labels([(sid, y, None) for sid, y in ready], i * 0.25)
    loop.add_labels([("x", 0, None)], 1.0)  # later in time: the owed tick runs first
    assert replay_rt.calls[-2:] == [("labels:1", 0.5), ("tick", 0.5)]
    assert rt.calls == [*replay_rt.calls, ("labels:x", 1.0)]


def test_a_recalibration_is_waited_for_before_the_next_sample() -> None:
    clock = SampleClock()
    rt = Recorder(clock)
    loop = ServiceLoop(rt, None, tick_every_s=0.5, clock=clock, settle_s=10.0)
    loop.serve([_sample(0, 0.0)])
    rt.job = threading.Event()  # the tick owed to t = 0 will find a job running
    threading.Timer(0.2, rt.job.set).start()
    loop.serve([_sample(1, 0.5)])
    assert rt.job.is_set()  # serving sample 1 waited for the job
    assert [c for c, _ in rt.calls] == ["serve:0", "tick", "serve:1"]


def test_a_recalibration_that_does_not_end_is_waited_for_at_most_settle_s() -> None:
    clock = SampleClock()
    rt = Recorder(clock)
    rt.job = threading.Event()  # never set
    loop = ServiceLoop(rt, None, clock=clock, settle_s=0.05)
    loop.serve([_sample(0, 0.0)])
    loop.serve([_sample(1, 1.0)])
    assert [c for c, _ in rt.calls] == ["serve:0", "tick", "serve:1"]
