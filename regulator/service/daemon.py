"""``regulator run``: startup → main loop → shutdown, with signals that only set flags.

SIGTERM/SIGINT stop intake, let a running recalibration finish (or abandon it after
``recalibration.timeout_s``), persist state and exit 0; a second SIGINT forces exit.
SIGHUP reloads the policy file: validated whole, swapped in, or refused and counted.
With ``NOTIFY_SOCKET`` set, READY, WATCHDOG and STATUS go to systemd.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from regulator.errors import ConfigError, InputError, RegulatorError
from regulator.policy.model import HttpSource as HttpSourceConfig
from regulator.policy.model import Policy, load_policy
from regulator.policy.references import missing_references
from regulator.service.api import ServerThread, build_app, serve
from regulator.service.executor import ProcessExecutor
from regulator.service.logging import configure_logging
from regulator.service.loop import TICK_EVERY_S, SampleClock, ServiceLoop
from regulator.service.replies import Replies
from regulator.service.rows import Result, ServedRows
from regulator.service.runtime import Runtime
from regulator.service.scheduler import Scheduler
from regulator.service.sdnotify import Notifier, watchdog_interval_s
from regulator.service.threads import pin_threads
from regulator.service.wiring import DaemonAPI, build_source, is_loopback, read_token
from regulator.tasks.sources import HttpSource, Source, SourceSample

log = logging.getLogger(__name__)

MAX_BATCH = 64  # samples per chip forward in the main loop
MAX_PENDING = 16 * MAX_BATCH  # samples read from the source and not yet served
FORWARD_BUDGET_S = 0.2  # one chip forward's share of a main-loop round (seconds)
SETTLE_MARGIN_S = 5.0  # on the samples' clock: waited for a job beyond its timeout_s
# Every torch op releases and retakes the GIL; while another thread of ours does Python
# work (a swap loading the new model), each retake can wait a whole switch interval
# (5 ms by default), so one forward stalls many times. A shorter interval bounds that.
SWITCH_INTERVAL_S = 0.0005


class Daemon:
    """One device's service: runtime, scheduler, HTTP API and the main loop.

    ``overrides`` are the command line's (``http.host``, ``http.port``, ``state_dir``):
    they hold over the file at start and at every reload."""

    def __init__(
        self,
        policy: Policy,
        config_path: Path | None,
        state_dir: Path,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.policy = policy
        self.config_path = config_path
        self.state_dir = state_dir
        self.overrides = dict(overrides or {})
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.ready = threading.Event()
        self.notifier = Notifier()
        self.server: ServerThread | None = None
        self.http_source: HttpSource | None = None
        self.replies = Replies()  # pushed samples' results, for POST /v1/samples
        src = policy.source
        # ``source.clock: sample``: the runtime runs on the pushed samples' time stamps.
        self.sample_clock = (
            SampleClock() if isinstance(src, HttpSourceConfig) and src.clock == "sample" else None
        )
        self.loop_alive = time.monotonic()  # the main loop's last round (for /healthz)
        self._interrupts = 0
        self.scheduler = Scheduler(on_event=self._job_event, workers=2)
        self.runtime: Runtime  # set in startup()
        self.loop: ServiceLoop  # set in startup()
        self._source: Source | None = None
        # Candidates are built in a worker process: adaptation's CPU work then neither
        # holds this process's GIL nor competes with inference at the same priority.
        self.executor = ProcessExecutor()

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
            pid = self.executor.warm()
            log.info("recalibration worker ready (pid %d)", pid)
        except Exception as err:
            if self.stop_requested.is_set():  # the stop ended it while it started
                log.info("recalibration worker start abandoned: stopping")
            else:
                log.warning("recalibration worker did not start: %s", err)

    def _job_event(self, job_id: str, outcome: str) -> None:
        with contextlib.suppress(AttributeError):  # a job event before startup finished
            self.runtime.metrics.scheduler_jobs.labels(job=job_id, outcome=outcome).inc()
        log.warning("scheduled job %s %s", job_id, outcome)

    # -- lifecycle --------------------------------------------------------------------------

    def startup(self) -> None:
        pin_threads()  # inference and recalibration each keep one core
        # On the samples' clock, durations and the budget's UTC day both read it, as in
        # replay (whose simulated clock is both).
        sc = self.sample_clock
        self.runtime = Runtime(
            self.policy,
            self.state_dir,
            clock=time.monotonic if sc is None else sc,
            wall_clock=time.time if sc is None else sc,
            scheduler=self.scheduler,
            executor=self.executor,
        )
        rt = self.runtime
        threading.Thread(target=self._warm_worker, name="warm-worker", daemon=True).start()
        if isinstance(self.policy.source, HttpSourceConfig):
            b = rt.serving.bundle
            self.http_source = HttpSource(
                n_channels=int(b.task["n_channels"]),
                length=int(b.task.get("length", 1)),
                maxsize=self.policy.source.queue_size,
            )
        self.scheduler.start()
        self._source, feedback = build_source(self.policy, self.http_source)
        # Pushed samples were checked against the served model by DaemonAPI.push_samples:
        # serving only stacks them (one validation per sample).
        self.loop = ServiceLoop(
            rt,
            feedback,
            checked=self._source is self.http_source,
            clock=self.sample_clock,
            settle_s=self.policy.recalibration.timeout_s + SETTLE_MARGIN_S,
        )
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
            metrics_max_age_s=http.metrics_max_age_s,
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
        """Read the source apart (it may block), then serve what arrived in rounds of
        :class:`ServiceLoop`, each chip forward sized to ``FORWARD_BUDGET_S``."""
        rt, source, loop = self.runtime, self._source, self.loop
        assert source is not None  # built in startup()
        wd = watchdog_interval_s()
        last_wd = 0.0
        done = threading.Event()
        pending: list[SourceSample] = []
        lock = threading.Lock()
        wake = threading.Event()
        # Backpressure: a source faster than the chip waits for room instead of
        # growing the queue without bound.
        room = threading.Semaphore(MAX_PENDING)

        def pump() -> None:
            try:
                for s in source:
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

        threading.Thread(target=pump, name="source", daemon=True).start()
        per_sample_s = 0.0  # recent chip time per sample, to size forwards (0: unknown)
        while not self.stop_requested.is_set():
            wake.wait(TICK_EVERY_S)
            wake.clear()
            self.loop_alive = time.monotonic()
            with lock:
                batch, pending[:] = list(pending), []
            # Samples that arrived together are served in one chip forward, as many as
            # fit FORWARD_BUDGET_S (so SIGTERM and the ticks never wait long whatever
            # n_steps is); what does not fit this round goes back to the queue.
            t_round = time.monotonic()
            k = 0
            held: list[tuple[list[SourceSample], Sequence[Result]]] = []
            while k < len(batch) and not self.stop_requested.is_set():
                size = 1  # the first forward measures what one sample costs
                if per_sample_s > 0:
                    size = max(1, min(MAX_BATCH, int(FORWARD_BUDGET_S / per_sample_s)))
                chunk = batch[k : k + size]
                t0 = time.perf_counter()
                # More queued: the monitor updates wait (a block, Inference.flush), and
                # so do the replies, which carry the p-values they fill in.
                outs = loop.serve(chunk, defer=k + len(chunk) < len(batch))
                held.append((chunk, outs))
                if rt.inference.n_deferred == 0:
                    self._deliver(held)
                dt = (time.perf_counter() - t0) / len(chunk)
                per_sample_s = dt if per_sample_s == 0 else 0.7 * per_sample_s + 0.3 * dt
                k += len(chunk)
                for _ in chunk:
                    room.release()
                if time.monotonic() - t_round > TICK_EVERY_S and k < len(batch):
                    with lock:
                        pending[:0] = batch[k:]
                    wake.set()
                    break
            loop.flush()
            self._deliver(held)
            loop.between_rounds()
            now = time.monotonic()
            if wd and now - last_wd >= wd / 2:
                self.notifier.watchdog()
                self.notifier.status(f"serving {rt.serving.version}, {rt.n_samples} samples")
                last_wd = now
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()
            if done.is_set() and not pending and not self.stop_requested.is_set():
                # (a stop ends the source too: that is no exhaustion)
                log.info("source exhausted; still serving the API until stopped")
                done.clear()

    def _deliver(self, held: list[tuple[list[SourceSample], Sequence[Result]]]) -> None:
        """Hand served results to the requests waiting for them (then forget them)."""
        for chunk, outs in held:
            self.replies.deliver([s.sample_id for s in chunk], outs)
            errors = (
                outs.errors
                if isinstance(outs, ServedRows)
                else {i: o for i, o in enumerate(outs) if isinstance(o, InputError)}
            )  # no row is made here: a waiting request makes its own
            for i, err in errors.items():
                log.warning("sample %s rejected: %s", chunk[i].sample_id, err)
        held.clear()

    def reload(self) -> None:
        """SIGHUP: validate the whole file; apply it whole or refuse it and keep the old
        one (:meth:`Runtime.reload` says which sections a restart must change)."""
        self.notifier.reloading()
        if self.config_path is None:
            log.info("reload requested, but the daemon runs on the embedded default")
            self.notifier.ready()
            return
        try:
            new = load_policy(self.config_path).with_overrides(self.overrides)
        except ConfigError as err:
            self.runtime.reload_failed(str(err))
            self.notifier.ready()
            return
        if self.runtime.reload(new).applied:
            self.policy = new
            logging.getLogger().setLevel(new.logging.level)
            log.info("policy reloaded from %s", self.config_path)
        self.notifier.ready()

    def shutdown(self) -> None:
        self.notifier.stopping("stopping")
        if self._source is not None:
            self._source.close()
        timeout = self.policy.recalibration.timeout_s
        t0 = time.monotonic()
        rt = getattr(self, "runtime", None)
        while rt is not None and rt.recalibration_pending() and time.monotonic() - t0 < timeout:
            time.sleep(0.1)
        if rt is not None and rt.recalibration_pending():
            log.warning("abandoning a recalibration still running after %.0f s", timeout)
        # Idle, or its job abandoned: either way nothing to wait for (a worker still
        # importing torch would otherwise hold the stop for seconds).
        self.executor.shutdown(wait=False, cancel_pending=True)
        self.scheduler.shutdown(wait=False)
        if self.server is not None:
            self.server.stop()
        if rt is not None:
            rt.close()
        log.info("stopped")


def run_daemon(config: Path | None, overrides: dict[str, Any]) -> int:
    """Entry point of ``regulator run``. Exit 0 on a clean stop, 2 on a bad policy."""
    policy = load_policy(config).with_overrides(overrides)
    missing = missing_references(policy, token_file=False)
    if missing:  # a typo in a path: exit 2 naming the field, before anything starts
        raise ConfigError("the policy names files that are not there:\n" + "\n".join(missing))
    configure_logging(
        policy.device.id,
        policy.logging.level,
        secrets=lambda: (read_token(policy),),
        fmt=policy.logging.format,
    )
    d = Daemon(policy, config, Path(policy.state_dir), overrides)
    d.install_signals()
    try:
        d.startup()
    except (RegulatorError, OSError) as err:  # OSError: the port taken, the state unwritable
        d.stop_requested.set()  # what started so far stops as for a stop, without alarm
        log.error("startup failed: %s", err)
        d.shutdown()
        return 2 if isinstance(err, ConfigError) else 1
    try:
        d.main_loop()
    finally:
        d.shutdown()
    return 0
