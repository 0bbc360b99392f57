"""What the daemon wires from its policy: the bearer token, the data source and its
feedback channel, the bind check, and :class:`DaemonAPI`, the HTTP API's view of a
running daemon (every call goes through the runtime's public methods)."""

from __future__ import annotations

import ipaddress
import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from regulator.errors import ConfigError, InputError, RegistryError
from regulator.policy.model import Action, Policy, ReplaySource, SimulatedSource
from regulator.policy.model import HttpSource as HttpSourceConfig
from regulator.service.actions import Trigger
from regulator.service.api import FeedbackItem, Sample
from regulator.service.paths import resolve_path
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
        return self.d.runtime.alert_action(labels)

    def handle_alert(self, action: Action, key: str) -> dict[str, Any]:
        return self.d.runtime.handle_alert(action, key)

    def recalibration_pending(self, key: str | None = None) -> bool:
        return self.d.runtime.recalibration_pending(key)

    def rollback(self) -> dict[str, Any]:
        result = self.d.runtime.rollback(trigger="http")
        if not result.get("ok"):
            raise RegistryError(str(result.get("reason") or "nothing to roll back"))  # 409
        return result

    def feedback(self, items: list[FeedbackItem]) -> dict[str, Any]:
        out = self.d.runtime.add_labels(
            [
                (
                    it.sample_id or f"fb-{time.time_ns()}-{i}",
                    it.y,
                    None if it.x is None else np.asarray(it.x, np.float32),
                )
                for i, it in enumerate(items)
            ]
        )
        return out

    def push_samples(self, items: list[Sample]) -> dict[str, Any]:
        rt, source = self.d.runtime, self.d.http_source
        if source is None or not isinstance(rt.policy.source, HttpSourceConfig):
            raise ConfigError("this daemon's source is not 'http'")
        accepted, rejected = [], []
        check = rt.serving.check
        for i, it in enumerate(items):
            try:
                accepted.append(source.push(check.sample(it.x), it.sample_id))
            except InputError as err:
                rt.metrics.samples_rejected.labels(reason=err.reason).inc()
                rejected.append({"index": i, "reason": err.reason, "detail": str(err)})
        return {"accepted": len(accepted), "ids": accepted, "rejected": rejected}

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
