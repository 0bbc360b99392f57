"""Job scheduling: one thin layer over APScheduler 3.x (when jobs run, never where).

:class:`Scheduler` owns a ``BackgroundScheduler`` whose jobs all have stable ids,
``max_instances=1``, ``coalesce=True`` (runs missed while the process was busy collapse
into one) and a misfire grace time. Missed, failed and skipped runs are logged and
reported to ``on_event(job_id, outcome)`` with outcome ``missed|failed|skipped``, which
the daemon wires to ``regulator_scheduler_jobs_total``. Jobs that share a ``group`` never
run at the same time (a run that finds its group busy is skipped), which is how "at most
one recalibration at a time" holds across the cron schedule and on-demand requests.

Where the heavy work of a job runs is :mod:`regulator.service.executor`'s business.

>>> s = Scheduler(misfire_grace_time=30)
>>> s.running, s.jobs()
(False, [])
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
    JobExecutionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor as APSThreadPool
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from regulator.errors import ConfigError

__all__ = ["JobOutcome", "Scheduler"]

log = logging.getLogger(__name__)

JobOutcome = str
"""``"missed"`` (later than the grace time), ``"failed"`` (raised), ``"skipped"`` (its
previous run or its group was still running)."""


class Scheduler:
    """Periodic and on-demand jobs with stable ids.

    ``misfire_grace_time`` is in whole seconds (APScheduler's rule); ``workers`` bounds
    concurrently running jobs.
    Ids are unique across periodic and on-demand jobs: use e.g. ``recalibrate:cron`` and
    ``recalibrate:now`` with a shared ``group="recalibration"``.
    """

    def __init__(
        self,
        on_event: Callable[[str, JobOutcome], None] | None = None,
        misfire_grace_time: int = 30,
        workers: int = 4,
        timezone: str | tzinfo = "UTC",
    ) -> None:
        if (
            isinstance(misfire_grace_time, bool)
            or not isinstance(misfire_grace_time, int)
            or (misfire_grace_time <= 0)
        ):
            raise ConfigError(
                f"misfire_grace_time must be a positive whole number of seconds, "
                f"got {misfire_grace_time!r}"
            )
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self._on_event = on_event
        self._timezone = timezone
        self._lock = threading.Lock()
        self._pending: set[str] = set()  # on-demand jobs queued or running
        self._group_of: dict[str, str] = {}
        self._group_locks: dict[str, threading.Lock] = {}
        self._aps = BackgroundScheduler(
            executors={"default": APSThreadPool(max_workers=workers)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": misfire_grace_time,
            },
            timezone=timezone,
        )
        self._aps.add_listener(
            self._listen, EVENT_JOB_MISSED | EVENT_JOB_ERROR | EVENT_JOB_MAX_INSTANCES
        )

    # -- lifecycle -------------------------------------------------------------------

    def start(self, paused: bool = False) -> None:
        self._aps.start(paused=paused)

    def pause(self) -> None:
        self._aps.pause()

    def resume(self) -> None:
        self._aps.resume()

    @property
    def running(self) -> bool:
        return bool(self._aps.running)

    def shutdown(self, wait: bool = True) -> None:
        """Stop; with ``wait``, running jobs finish first. Idempotent."""
        if self._aps.running:
            self._aps.shutdown(wait=wait)
        with self._lock:
            self._pending.clear()

    # -- jobs ------------------------------------------------------------------------

    def add_interval(
        self,
        job_id: str,
        seconds: float,
        fn: Callable[[], Any],
        *,
        group: str | None = None,
        start_now: bool = False,
    ) -> None:
        """Run ``fn`` every ``seconds`` (first run after one interval unless
        ``start_now``). Replaces a job with the same id."""
        if seconds <= 0:
            raise ConfigError(f"interval for job {job_id!r} must be > 0 s, got {seconds}")
        trigger = IntervalTrigger(seconds=seconds, timezone=self._timezone)
        kwargs: dict[str, Any] = {}
        if start_now:
            kwargs["next_run_time"] = datetime.now(trigger.timezone)
        self._add(job_id, trigger, fn, group, **kwargs)

    def add_cron(
        self, job_id: str, crontab: str, fn: Callable[[], Any], *, group: str | None = None
    ) -> None:
        """Run ``fn`` on a standard 5-field crontab (``"*/15 * * * *"``). Replaces a job
        with the same id; ConfigError for a bad expression."""
        try:
            trigger = CronTrigger.from_crontab(crontab, timezone=self._timezone)
        except ValueError as exc:
            raise ConfigError(f"job {job_id!r}: bad crontab {crontab!r}: {exc}") from exc
        self._add(job_id, trigger, fn, group)

    def run_now(self, job_id: str, fn: Callable[[], Any], *, group: str | None = None) -> bool:
        """Run ``fn`` once, as soon as possible. Returns False (and schedules nothing)
        while a run with this id is still queued or running."""
        with self._lock:
            if job_id in self._pending:
                return False
            self._pending.add(job_id)
        try:
            self._add(job_id, "date", fn, group, replace=False, once=True)
        except ConflictingIdError:
            with self._lock:
                self._pending.discard(job_id)
            return False
        except BaseException:
            with self._lock:
                self._pending.discard(job_id)
            raise
        return True

    def pending(self, job_id: str) -> bool:
        """True while an on-demand run of ``job_id`` is queued or running."""
        with self._lock:
            return job_id in self._pending

    def remove(self, job_id: str) -> None:
        """Remove a job; unknown ids are ignored."""
        with contextlib.suppress(JobLookupError):
            self._aps.remove_job(job_id)
        with self._lock:
            self._pending.discard(job_id)

    def remove_all(self) -> None:
        """Remove every scheduled job (running ones finish)."""
        self._aps.remove_all_jobs()

    def jobs(self) -> list[dict[str, Any]]:
        """Scheduled jobs with their next run (seconds since the epoch, or None)."""
        out = []
        for job in self._aps.get_jobs():
            nrt = getattr(job, "next_run_time", None)
            out.append({"id": job.id, "next_run": nrt.timestamp() if nrt else None})
        with self._lock:
            pending = sorted(self._pending)
        known = {j["id"] for j in out}
        out += [{"id": p, "next_run": None} for p in pending if p not in known]
        return sorted(out, key=lambda j: j["id"])

    # -- internals -------------------------------------------------------------------

    def _add(
        self,
        job_id: str,
        trigger: Any,
        fn: Callable[[], Any],
        group: str | None,
        replace: bool = True,
        once: bool = False,
        **kwargs: Any,
    ) -> None:
        if not job_id:
            raise ConfigError("job id must be non-empty")
        with self._lock:
            if group is not None:
                self._group_locks.setdefault(group, threading.Lock())
                self._group_of[job_id] = group
            else:
                self._group_of.pop(job_id, None)
        self._aps.add_job(
            self._wrap(job_id, fn, group, once),
            trigger,
            id=job_id,
            name=job_id,
            replace_existing=replace,
            **kwargs,
        )

    def _wrap(
        self, job_id: str, fn: Callable[[], Any], group: str | None, once: bool
    ) -> Callable[[], Any]:
        def run() -> Any:
            lock = self._group_locks.get(group) if group is not None else None
            try:
                if lock is not None and not lock.acquire(blocking=False):
                    log.warning("job %s skipped: group %s is busy", job_id, group)
                    self._report(job_id, "skipped")
                    return None
                try:
                    return fn()
                finally:
                    if lock is not None:
                        lock.release()
            finally:
                if once:
                    with self._lock:
                        self._pending.discard(job_id)

        run.__name__ = f"job_{job_id}"
        return run

    def _listen(self, event: JobEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            outcome = "missed"
            log.warning("job %s missed its run time (later than the grace time)", event.job_id)
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            outcome = "skipped"
            log.warning("job %s skipped: its previous run is still going", event.job_id)
        else:
            outcome = "failed"
            exc = event.exception if isinstance(event, JobExecutionEvent) else None
            log.error("job %s failed: %r", event.job_id, exc)
        if outcome != "failed":
            # an on-demand run that never started is no longer pending
            with self._lock:
                self._pending.discard(event.job_id)
        self._report(event.job_id, outcome)

    def _report(self, job_id: str, outcome: JobOutcome) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(job_id, outcome)
        except Exception:  # a broken callback must not take the scheduler down
            log.exception("scheduler event callback failed")
