"""What the daemon wires from its policy: the bearer token, the data source and its
feedback channel, the bind check, and :class:`DaemonAPI`, the HTTP API's view of a
running daemon (every call goes through the runtime's public methods)."""

from __future__ import annotations

import ipaddress
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from regulator.errors import ConfigError, InputError, RegistryError
from regulator.policy.model import Action, Policy, ReplaySource, SimulatedSource
from regulator.policy.model import HttpSource as HttpSourceConfig
from regulator.service.actions import Trigger
from regulator.service.api import FeedbackItem, Sample
from regulator.service.bodies import REPLY_WAIT_S
from regulator.service.paths import resolve_path
from regulator.service.replies import Reply
from regulator.tasks.sources import FeedbackChannel, HttpSource, Source, make_source

if TYPE_CHECKING:
    from regulator.service.daemon import Daemon

__all__ = ["HEALTHY_WITHIN_S", "DaemonAPI", "build_source", "is_loopback", "read_token"]

HEALTHY_WITHIN_S = 30.0


def read_token(policy: Policy) -> str | None:
    """The bearer token from the policy's token file or environment variable."""
    http = policy.http
    if http.token_file:
        path = resolve_path(http.token_file)
        try:
            token = path.read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, IndexError):
            return None
        return token or None
    value = os.environ.get(http.token_env, "").strip()
    return value or None


def build_source(
    policy: Policy, http_source: HttpSource | None = None
) -> tuple[Source, FeedbackChannel | None]:
    """The policy's data source and, where labels come with it, their feedback channel."""
    src = policy.source
    if isinstance(src, SimulatedSource):
        sched: dict[str, Any] = {"kind": src.schedule.kind}
        every = max(1, int(src.schedule.period_s * src.rate_hz))
        if src.schedule.kind == "abrupt":
            sched["every"] = every
        elif src.schedule.kind == "recurring":
            sched["period"] = every
        elif src.schedule.kind == "gradual":
            sched.update({"every": every, "width": max(1, every // 4)})
        source: Source = make_source(
            "simulated",
            family=src.family,
            schedule=sched,
            seed=policy.device.seed,
            rate_hz=src.rate_hz,
        )
        fb = FeedbackChannel(src.label_delay_samples, src.label_fraction, seed=policy.device.seed)
        return source, fb
    if isinstance(src, ReplaySource):
        files = [str(resolve_path(f)) for f in src.files]
        source = make_source("replay", paths=files, rate_hz=src.rate_hz)
        fb = FeedbackChannel(src.label_delay_samples, src.label_fraction, seed=policy.device.seed)
        return source, fb
    assert isinstance(src, HttpSourceConfig)
    if http_source is None:
        raise ConfigError("source.kind http needs the HTTP API")
    return http_source, None


class DaemonAPI:
    """The :class:`regulator.service.api.RuntimeAPI` over a running daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    def healthy(self) -> bool:
        if self.d.sample_clock is not None:  # ticks wait for samples: is the loop turning?
            return time.monotonic() - self.d.loop_alive < HEALTHY_WITHIN_S
        return self.d.runtime.healthy_since_tick_s < HEALTHY_WITHIN_S

    def ready(self) -> bool:
        return self.d.ready.is_set() and self.d.scheduler.running

    def status(self) -> dict[str, Any]:
        s = self.d.runtime.status()
        s["pending_jobs"] = self.d.runtime.schedule_jobs()
        return s

    def models(self) -> list[dict[str, Any]]:
        return self.d.runtime.models()

    def request_recalibration(self, trigger: Trigger, key: str | None = None) -> dict[str, Any]:
        return self.d.runtime.request_recalibration(trigger, mode="supervised", key=key)

    def alert_action(self, labels: dict[str, str]) -> Action | None:
        return self.d.runtime.controls.alert_action(labels)

    def handle_alert(self, action: Action, key: str) -> dict[str, Any]:
        return self.d.runtime.controls.handle_alert(action, key)

    def recalibration_pending(self, key: str | None = None) -> bool:
        return self.d.runtime.recalibration_pending(key)

    def rollback(self) -> dict[str, Any]:
        result = self.d.runtime.controls.rollback(trigger="http")
        if not result.get("ok"):
            raise RegistryError(str(result.get("reason") or "nothing to roll back"))  # 409
        return result

    def feedback(self, items: list[FeedbackItem]) -> dict[str, Any]:
        # Through the loop: on the samples' clock labels take their place in its order
        # at their ``t`` (the latest of the request's; none: the clock's time now).
        t = max((it.t for it in items if it.t is not None), default=None)
        return self.d.loop.add_labels(
            [
                (
                    it.sample_id or f"fb-{time.time_ns()}-{i}",
                    it.y,
                    None if it.x is None else np.asarray(it.x, np.float32),
                )
                for i, it in enumerate(items)
            ],
            t if self.d.sample_clock is not None else None,
        )

    def push_samples(self, items: list[Sample], wait: bool = True) -> dict[str, Any]:
        rt, source, clock = self.d.runtime, self.d.http_source, self.d.sample_clock
        if source is None or not isinstance(rt.policy.source, HttpSourceConfig):
            raise ConfigError("this daemon's source is not 'http'")
        ids: list[str] = []
        rejected: list[dict[str, Any]] = []
        waits: list[tuple[int, str, Reply]] = []
        check, replies = rt.serving.check, self.d.replies
        for i, it in enumerate(items):
            sid = it.sample_id or uuid.uuid4().hex
            reply = replies.expect(sid) if wait else None  # before the loop can serve it
            # On the samples' clock a sample is served at its ``t`` (none: the time now);
            # on the wall clock at the time it is served.
            t = None if clock is None else clock() if it.t is None else it.t
            try:
                source.push(check.sample(it.x), sid, t)
            except InputError as err:
                if reply is not None:
                    replies.cancel(sid, reply)
                rt.metrics.samples_rejected.labels(reason=err.reason).inc()
                rejected.append({"index": i, "reason": err.reason, "detail": str(err)})
                continue
            ids.append(sid)
            if reply is not None:
                waits.append((i, sid, reply))
        predictions, pending = self._await(waits, rejected) if wait else ([], list(ids))
        return {
            "accepted": len(ids),
            "ids": ids,
            "rejected": sorted(rejected, key=lambda r: r["index"]),
            "predictions": predictions,
            "pending": pending,
            "recalibration": rt.recal.state.phase,
        }

    def _await(
        self, waits: list[tuple[int, str, Reply]], rejected: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """The pushed samples' results, waited for at most REPLY_WAIT_S in all (on the
        samples' clock also as long as serving may wait for a recalibration); a sample
        refused at serving joins ``rejected`` (its index in the request)."""
        wait_s = REPLY_WAIT_S + (self.d.loop.settle_s if self.d.sample_clock else 0.0)
        deadline = time.monotonic() + wait_s
        predictions: list[dict[str, Any]] = []
        pending: list[str] = []
        for i, sid, reply in waits:
            if not reply.wait(deadline - time.monotonic()):
                self.d.replies.cancel(sid, reply)
                pending.append(sid)
                continue
            res = reply.result
            if isinstance(res, InputError):
                rejected.append({"index": i, "reason": res.reason, "detail": str(res)})
            elif res is not None:
                predictions.append(res)
        return predictions, pending

    def record_events(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        self.d.runtime.state.events.append_many(events)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
