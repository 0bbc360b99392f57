"""``regulator run``: startup → main loop → shutdown, with signals that only set flags.

SIGTERM/SIGINT stop intake, let a running recalibration finish (or abandon it after
``recalibration.timeout_s``), persist state and exit 0; a second SIGINT forces exit.
SIGHUP reloads the policy file: validated whole, swapped in, or refused and counted.
With ``NOTIFY_SOCKET`` set, READY, WATCHDOG and STATUS go to systemd.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch

from regulator.errors import (
    ConfigError,
    InputError,
    RegistryError,
    RegulatorError,
    RejectReason,
    StorageFullError,
)
from regulator.policy.model import HttpSource as HttpSourceConfig
from regulator.policy.model import Policy, ReplaySource, SimulatedSource, load_policy
from regulator.service.api import FeedbackItem, Sample, ServerThread, build_app, serve
from regulator.service.candidate import ProcessCandidateRunner
from regulator.service.logging import configure_logging
from regulator.service.runtime import RECAL_JOB, Runtime, resolve_path
from regulator.service.scheduler import Scheduler
from regulator.service.sdnotify import Notifier, watchdog_interval_s
from regulator.tasks.sources import (
    FeedbackChannel,
    HttpSource,
    Source,
    SourceSample,
    make_source,
)

log = logging.getLogger(__name__)

HEALTHY_WITHIN_S = 30.0
TICK_EVERY_S = 0.5
MAX_BATCH = 64  # samples per chip forward in the main loop
MAX_PENDING = 16 * MAX_BATCH  # samples read from the source and not yet served
FORWARD_BUDGET_S = 0.2  # one chip forward's share of a main-loop round (seconds)
# Every torch op releases and retakes the GIL; while another thread of ours does Python
# work (a swap loading the new model), each retake can wait a whole switch interval
# (5 ms by default), so one forward stalls many times. A shorter interval bounds that.
SWITCH_INTERVAL_S = 0.0005


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
        return time.time() - self.d.runtime._last_tick_wall < HEALTHY_WITHIN_S

    def ready(self) -> bool:
        return self.d.ready.is_set() and self.d.scheduler.running

    def status(self) -> dict[str, Any]:
        s = self.d.runtime.status()
        s["pending_jobs"] = self.d.scheduler.jobs()
        return s

    def models(self) -> list[dict[str, Any]]:
        return self.d.runtime.models()

    def request_recalibration(self, trigger: str, key: str | None = None) -> dict[str, Any]:
        return self.d.runtime.request_recalibration(trigger, mode="supervised", key=key)

    def alert_action(self, labels: dict[str, str]) -> str | None:
        return self.d.runtime.alert_action(labels)

    def handle_alert(self, action: str, key: str) -> dict[str, Any]:
        return self.d.runtime.handle_alert(action, key)

    def recalibration_pending(self, key: str | None = None) -> bool:
        if key is not None and key in self.d.runtime._alert_keys:
            return True
        return self.d.scheduler.pending(RECAL_JOB) if key is None else False

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
        if self.d.http_source is None or not isinstance(
            self.d.runtime.policy.source, HttpSourceConfig
        ):
            raise ConfigError("this daemon's source is not 'http'")
        accepted, rejected = [], []
        for i, it in enumerate(items):
            try:
                accepted.append(self.d.http_source.push(np.asarray(it.x, np.float32), it.sample_id))
            except (InputError, ValueError) as err:
                reason = _push_reason(err)
                self.d.runtime.metrics.samples_rejected.labels(reason=reason).inc()
                rejected.append({"index": i, "reason": reason, "detail": str(err)})
        return {"accepted": len(accepted), "ids": accepted, "rejected": rejected}

    def record_events(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        self.d.runtime.state.events.append_many(events)


def _push_reason(err: Exception) -> RejectReason:
    """The HTTP source's refusal in the one vocabulary of reasons."""
    msg = str(err)
    if "queue" in msg or "closed" in msg:
        return "queue_full"
    if "non-finite" in msg:
        return "non_finite"
    return "bad_shape"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Daemon:
    """One device's service: runtime, scheduler, HTTP API and the main loop."""

    def __init__(self, policy: Policy, config_path: Path | None, state_dir: Path) -> None:
        self.policy = policy
        self.config_path = config_path
        self.state_dir = state_dir
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.ready = threading.Event()
        self.notifier = Notifier()
        self.server: ServerThread | None = None
        self.http_source: HttpSource | None = None
        self._interrupts = 0
        self.scheduler = Scheduler(on_event=self._job_event, workers=2)
        self.runtime: Runtime  # set in startup()
        self.candidates = ProcessCandidateRunner()

    # -- signals only set flags -----------------------------------------------------------

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._interrupts += 1
        if self._interrupts > 1 and signum == signal.SIGINT:
            os._exit(1)  # a second Ctrl-C forces exit
        self.stop_requested.set()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested.set()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _warm_worker(self) -> None:
        try:
            pid = self.candidates.warm()
            log.info("recalibration worker ready (pid %d)", pid)
        except Exception as err:
            log.warning("recalibration worker did not start: %s", err)

    def _job_event(self, job_id: str, outcome: str) -> None:
        with contextlib.suppress(AttributeError):  # a job event before startup finished
            self.runtime.metrics.scheduler_jobs.labels(job=job_id, outcome=outcome).inc()
        log.warning("scheduled job %s %s", job_id, outcome)

    # -- lifecycle --------------------------------------------------------------------------

    def startup(self) -> None:
        torch.set_num_threads(1)  # inference and recalibration each keep one core
        self.runtime = Runtime(self.policy, self.state_dir)
        rt = self.runtime
        rt.submit = lambda job_id, fn: self.scheduler.run_now(job_id, fn, group="recalibration")
        # Candidates are built in a worker process: adaptation's CPU work then neither
        # holds this process's GIL nor competes with inference at the same priority.
        self.candidates = ProcessCandidateRunner()
        rt.candidate_runner = self.candidates
        threading.Thread(target=self._warm_worker, name="warm-worker", daemon=True).start()
        if isinstance(self.policy.source, HttpSourceConfig):
            b = rt.serving.bundle
            self.http_source = HttpSource(
                n_channels=int(b.task["n_channels"]),
                length=int(b.task.get("length", 1)),
                maxsize=self.policy.source.queue_size,
            )
        for sched in self.policy.schedules:
            action = sched.action

            def run_scheduled(a: str = action) -> None:
                rt.act(a, trigger="schedule", reason="schedule")

            if sched.kind == "interval":
                self.scheduler.add_interval(f"schedule-{sched.id}", sched.every_s, run_scheduled)
            else:
                self.scheduler.add_cron(f"schedule-{sched.id}", sched.cron, run_scheduled)
        self.scheduler.start()
        http = self.policy.http
        loopback = is_loopback(http.host)
        if not loopback:
            log.warning(
                "binding %s, beyond loopback: the read routes (/metrics, /v1/status, "
                "/v1/models) are open to that network; put a firewall or an authenticating "
                "proxy in front",
                http.host,
            )
        docs = http.docs == "always" or (http.docs == "loopback" and loopback)
        app = build_app(
            DaemonAPI(self),
            rt.metrics_registry,
            lambda: read_token(self.policy),
            http.max_body_bytes,
            metrics=rt.metrics,
            max_json_depth=http.max_json_depth,
            docs=docs,
        )
        self.server = serve(app, http.host, http.port)
        log.info("listening on http://%s:%d", http.host, self.server.port)
        if read_token(self.policy) is None:
            log.warning(
                "no token configured (%s): mutating routes are refused", self.policy.http.token_env
            )
        threading.Thread(
            target=rt.prime_detector_thresholds, name="prime-thresholds", daemon=True
        ).start()
        # Everything loaded so far lives as long as the process: keep it out of the
        # garbage collector's scans, which otherwise grow with it on the serving path.
        gc.freeze()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.ready.set()
        self.notifier.ready(f"serving {rt.serving.version}")

    def main_loop(self) -> None:
        rt = self.runtime
        source, feedback = build_source(self.policy, self.http_source)
        self._source = source
        wd = watchdog_interval_s()
        last_tick = last_wd = 0.0
        it = iter(feedback.wrap(source) if feedback is not None else source)
        done = threading.Event()
        pending: list[SourceSample] = []

        # Backpressure: a source faster than the chip waits for room instead of
        # growing the queue without bound.
        room = threading.Semaphore(MAX_PENDING)

        def pump() -> None:  # the source may block (pacing, HTTP queue): read it apart
            try:
                for s in it:
                    while not room.acquire(timeout=0.2):
                        if self.stop_requested.is_set():
                            return
                    if self.stop_requested.is_set():
                        break
                    with lock:
                        pending.append(s)
                    wake.set()
            finally:
                done.set()
                wake.set()

        lock = threading.Lock()
        wake = threading.Event()
        reader = threading.Thread(target=pump, name="source", daemon=True)
        reader.start()
        per_sample_s = 0.0  # recent chip time per sample, to size forwards (0: unknown)
        while not self.stop_requested.is_set():
            wake.wait(TICK_EVERY_S)
            wake.clear()
            with lock:
                batch, pending[:] = list(pending), []
            # Samples that arrived together are served in one chip forward, as many as
            # fit FORWARD_BUDGET_S (so SIGTERM and the ticks never wait long whatever
            # n_steps is); what does not fit this round goes back to the queue.
            t_round = time.monotonic()
            k = 0
            while k < len(batch) and not self.stop_requested.is_set():
                size = 1  # the first forward measures what one sample costs
                if per_sample_s > 0:
                    size = max(1, min(MAX_BATCH, int(FORWARD_BUDGET_S / per_sample_s)))
                chunk = batch[k : k + size]
                t0 = time.perf_counter()
                outs = rt.process_batch([(s.sample_id, s.x) for s in chunk])
                dt = (time.perf_counter() - t0) / len(chunk)
                per_sample_s = dt if per_sample_s == 0 else 0.7 * per_sample_s + 0.3 * dt
                k += len(chunk)
                for _ in chunk:
                    room.release()
                for s, out in zip(chunk, outs, strict=True):
                    if isinstance(out, InputError):
                        log.warning("sample %s rejected: %s", s.sample_id, out)
                if time.monotonic() - t_round > TICK_EVERY_S and k < len(batch):
                    with lock:
                        pending[:0] = batch[k:]
                    wake.set()
                    break
            if feedback is not None:
                ready = feedback.pop_ready()
                if ready:
                    # On a full disk the guard counts and logs the refusal; serve on.
                    with contextlib.suppress(StorageFullError):
                        rt.add_labels([(sid, y, None) for sid, y in ready])
            now = time.monotonic()
            if now - last_tick >= TICK_EVERY_S:
                try:
                    rt.tick()
                except OSError as err:  # a disk error must not end the main loop
                    log.error("tick: %s", err)
                last_tick = now
            if wd and now - last_wd >= wd / 2:
                self.notifier.watchdog()
                self.notifier.status(f"serving {rt.serving.version}, {rt.n_samples} samples")
                last_wd = now
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()
            if done.is_set() and not pending:
                log.info("source exhausted; still serving the API until stopped")
                done.clear()

    def reload(self) -> None:
        """SIGHUP: validate the whole file; swap it in or refuse it and keep the old one."""
        self.notifier.reloading()
        if self.config_path is None:
            log.info("reload requested, but the daemon runs on the embedded default")
            self.notifier.ready()
            return
        try:
            new = load_policy(self.config_path)
            new = new.with_overrides(
                {
                    "http.host": self.policy.http.host,
                    "http.port": self.policy.http.port,
                    "state_dir": self.policy.state_dir,
                }
            )
        except ConfigError as err:
            self.runtime.metrics.policy_reload_failures.inc()
            self.runtime.state.events.append("reload", ok=False, reason=str(err))
            log.error("policy reload refused, keeping the old policy: %s", err)
            self.notifier.ready()
            return
        self.policy = new
        self.runtime.reload(new)
        log.info("policy reloaded from %s", self.config_path)
        self.notifier.ready()

    def shutdown(self) -> None:
        self.notifier.stopping("stopping")
        src = getattr(self, "_source", None)
        if src is not None:
            src.close()
        timeout = self.policy.recalibration.timeout_s
        t0 = time.monotonic()
        while self.scheduler.pending(RECAL_JOB) and time.monotonic() - t0 < timeout:
            time.sleep(0.1)
        if self.scheduler.pending(RECAL_JOB):
            log.warning("abandoning a recalibration still running after %.0f s", timeout)
        # Idle, or its job abandoned: either way nothing to wait for (a worker still
        # importing torch would otherwise hold the stop for seconds).
        self.candidates.close(kill=True)
        self.scheduler.shutdown(wait=False)
        if self.server is not None:
            self.server.stop()
        self.runtime.close()
        log.info("stopped")


def run_daemon(config: Path | None, overrides: dict[str, Any]) -> int:
    """Entry point of ``regulator run``. Exit 0 on a clean stop, 2 on a bad policy."""
    policy = load_policy(config).with_overrides(overrides)
    configure_logging(
        policy.device.id,
        policy.logging.level,
        secrets=lambda: (read_token(policy),),
        fmt=policy.logging.format,
    )
    d = Daemon(policy, config, Path(policy.state_dir))
    d.install_signals()
    try:
        d.startup()
    except RegulatorError as err:
        log.error("startup failed: %s", err)
        return 2 if isinstance(err, ConfigError) else 1
    try:
        d.main_loop()
    finally:
        d.shutdown()
    return 0
