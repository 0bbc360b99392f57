"""Turns between serving and background steps (regulator.turns), alone and in a runtime."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from regulator import turns as turns_mod
from regulator.policy.model import Policy
from regulator.service.runtime import Runtime
from regulator.tasks.base import make_family
from regulator.turns import Turns
from tests.service.conftest import policy_dict


def _in_thread(fn: object) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)  # type: ignore[arg-type]
    t.start()
    return t


def test_serving_waits_for_a_step_and_the_step_for_serving() -> None:
    turns = Turns()
    log: list[str] = []
    in_step, release = threading.Event(), threading.Event()

    def step() -> None:
        with turns.step():
            in_step.set()
            release.wait(10)
            log.append("step done")

    def serve() -> None:
        with turns.serving():
            log.append("served")

    t = _in_thread(step)
    assert in_step.wait(10)
    s = _in_thread(serve)
    time.sleep(0.1)
    assert log == []  # serving waits while the step holds the turn
    release.set()
    t.join(10)
    s.join(10)
    assert log == ["step done", "served"]


def test_serving_goes_first_and_a_busy_server_still_lets_a_step_through() -> None:
    """Serving eager with no gap between turns, a step loop eager too: serving is never
    made to wait except for a step that has waited ``step_every_s``, so the steps get a
    turn about once per ``step_every_s`` (not one in two), and none waits much longer."""
    turns = Turns(idle_s=0.01, step_every_s=0.05)
    stop = threading.Event()
    served = [0]
    step_waits: list[float] = []

    def serve() -> None:
        while not stop.is_set():
            with turns.serving():
                served[0] += 1
                time.sleep(0.0005)

    s = _in_thread(serve)
    time.sleep(0.02)
    for _ in range(8):
        t0 = time.monotonic()
        with turns.step():
            step_waits.append(time.monotonic() - t0)
    stop.set()
    s.join(10)
    assert served[0] > 8 * 10  # serving kept most turns
    assert all(0.04 <= w < 1.0 for w in step_waits), step_waits  # due, never starved
    assert turns.overruns == 0


def test_a_step_goes_at_once_once_serving_is_idle() -> None:
    """Serving idle (the daemon between batches): a step waits only ``idle_s``."""
    turns = Turns(idle_s=0.01, step_every_s=5.0)
    with turns.serving():
        pass
    time.sleep(0.02)
    t0 = time.monotonic()
    with turns.step():
        waited = time.monotonic() - t0
    assert waited < 0.5
    with turns.serving():
        pass
    t0 = time.monotonic()
    with turns.step():  # serving gave its turn up just now: the step waits for the gap
        waited = time.monotonic() - t0
    assert 0.005 <= waited < 0.5


def test_a_step_gives_its_turn_up_outside_and_for_fsync(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Blocking waits inside a step (the worker; the disk, in a region declared free of
    serving's locks) let serving run meanwhile; an fsync elsewhere keeps the turn."""
    turns = Turns()
    served: list[str] = []

    def serve_now(what: str) -> None:  # another thread's turn, waited for
        def serve() -> None:
            with turns.serving():
                served.append(what)

        t = _in_thread(serve)
        t.join(1.0)  # well within the turns' bound

    real_fsync = os.fsync

    def fsync_that_serves(fd: int) -> None:
        serve_now("during fsync")
        real_fsync(fd)

    monkeypatch.setattr(turns_mod.os, "fsync", fsync_that_serves)
    with turns.step():
        with open(tmp_path / "f", "wb") as f, turns.yielding():
            f.write(b"x")
            turns_mod.fsync(f.fileno())
        turns.outside(serve_now, "outside")
        serve_now("inside the step")  # waits: the step holds the turn
        assert served == ["during fsync", "outside"]
    time.sleep(0.2)
    assert served == ["during fsync", "outside", "inside the step"]
    served.clear()
    monkeypatch.setattr(turns_mod.os, "fsync", lambda fd: served.append("fsync"))
    with turns.step():
        turns_mod.fsync(0)  # not in a yielding region: the turn is kept
        turns_mod.checkpoint()  # likewise a no-op
    assert served == ["fsync"]


def test_a_step_inside_serving_in_one_thread_passes_through() -> None:
    """Replay's one loop serves and recalibrates in one thread: no self-deadlock."""
    turns = Turns()
    with turns.serving(), turns.step(), turns.serving():
        pass
    with turns.step(), turns.step():
        turns.pause()  # no one waits: returns at once


def test_a_turn_never_waited_for_longer_than_the_bound(caplog: pytest.LogCaptureFixture) -> None:
    """A step that never gives its turn up (a bug, a lock it should not hold) cannot
    hang serving: past ``max_wait_s`` serving goes on without the turn, logged and
    counted, and the turns work again once the step ends."""
    turns = Turns(max_wait_s=0.2)
    holding, release = threading.Event(), threading.Event()

    def stuck_step() -> None:
        with turns.step():
            holding.set()
            release.wait(10)

    t = _in_thread(stuck_step)
    assert holding.wait(10)
    t0 = time.monotonic()
    with turns.serving():
        waited = time.monotonic() - t0
    assert 0.15 < waited < 5 and turns.overruns == 1
    assert "going on without it" in caplog.text
    release.set()
    t.join(10)
    with turns.serving():  # free again
        pass
    assert turns.overruns == 1


def test_no_sample_is_served_inside_a_recalibration_step(tmp_path: Path, tiny_prior: Path) -> None:
    """The runtime's serving path never runs while a recalibration's in-process step
    (here: storing the version, made slow) holds the turn; the worker's run is outside
    the step. Failed before: inference interleaved with the recalibration's Python."""
    policy = Policy.model_validate(
        policy_dict(
            tiny_prior,
            recalibration={
                "k_shot": 2,
                "holdout_per_class": 1,
                "max_per_hour": 60,
                "allow_label_free_fallback": False,
            },
        )
    )
    rt = Runtime(policy, tmp_path / "state", inline_jobs=True)
    try:
        fam = make_family("nanosensor")
        x, y = fam.sample(fam.environment_from_seed(7), 60, np.random.default_rng(3))
        rt.add_labels([(f"l{i}", int(y[i]), x[i]) for i in range(len(y))])
        inside = threading.Event()
        overlapped: list[int] = []
        real_add = rt.registry.add

        def slow_add(*a: object, **k: object) -> str:
            inside.set()
            time.sleep(0.3)  # stands for the step's Python work (it holds the turn)
            inside.clear()
            return real_add(*a, **k)  # type: ignore[arg-type]

        rt.registry.add = slow_add  # type: ignore[method-assign]
        stop = threading.Event()
        served = [0]

        def serve() -> None:
            i = 0
            while not stop.is_set():
                before = inside.is_set()
                rt.process(f"s{i}", x[i % len(x)])
                if before and inside.is_set():  # served wholly inside the step
                    overlapped.append(i)
                served[0] += 1
                i += 1

        t = _in_thread(serve)
        res = rt.recalibrate("http", "supervised")
        stop.set()
        t.join(30)
        assert res.outcome == "accepted", res.to_dict()
        assert served[0] > 0
        assert overlapped == []
    finally:
        rt.close()
