"""The policy's ``schedules``, carried out through the one action table (trigger
``schedule``) and re-installed whole on a policy reload.

Interval schedules run on the runtime's clock, from the loop's tick: monotonic in the
daemon, so a step of the wall clock neither stalls them (APScheduler's interval
trigger waited out a step back) nor bunches them, and simulated in a replay, which so
runs them too. Runs missed while the loop was busy collapse into one. Cron schedules are
wall-clock by definition and stay with the scheduler.

>>> from regulator.policy.model import parse_policy
>>> p = parse_policy({"schedules": [{"id": "beat", "kind": "interval", "every_s": 10,
...                                  "action": "alert_only"}]})
>>> iv = IntervalSchedules()
>>> iv.install(p, t_s=0.0)
>>> iv.due(9.5), iv.due(10.0), iv.due(35.0), iv.due(39.0)
([], ['alert_only'], ['alert_only'], [])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from regulator.policy.model import Action, Policy
from regulator.service.actions import ActionTable
from regulator.service.scheduler import Scheduler

__all__ = ["PREFIX", "IntervalSchedules", "install_cron"]

PREFIX = "schedule-"
"""Job ids of the policy's schedules: ``schedule-<id>``."""


@dataclass
class _Interval:
    every_s: float
    action: Action
    next_s: float


class IntervalSchedules:
    """The policy's interval schedules, due by the runtime's clock (seconds)."""

    def __init__(self) -> None:
        self._jobs: dict[str, _Interval] = {}

    def install(self, policy: Policy, t_s: float) -> None:
        """Take ``policy``'s interval schedules; one whose period did not change keeps
        its next run, a new or changed one runs one period from ``t_s``."""
        new: dict[str, _Interval] = {}
        for s in policy.schedules:
            if s.kind != "interval":
                continue
            old = self._jobs.get(s.id)
            next_s = old.next_s if old is not None and old.every_s == s.every_s else t_s + s.every_s
            new[s.id] = _Interval(s.every_s, s.action, next_s)
        self._jobs = new

    def due(self, t_s: float) -> list[Action]:
        """The actions due at ``t_s`` (each at most once), their next runs advanced."""
        out: list[Action] = []
        for job in self._jobs.values():
            if t_s >= job.next_s:
                out.append(job.action)
                missed = math.floor((t_s - job.next_s) / job.every_s)
                job.next_s += (missed + 1) * job.every_s
        return out

    def jobs(self, t_s: float, wall_s: float) -> list[dict[str, object]]:
        """``{"id", "next_run"}`` (seconds since the epoch) of each interval schedule."""
        return [
            {"id": f"{PREFIX}{sid}", "next_run": wall_s + (job.next_s - t_s)}
            for sid, job in sorted(self._jobs.items())
        ]


def install_cron(scheduler: Scheduler | None, policy: Policy, actions: ActionTable) -> None:
    """Replace the scheduler's cron schedule jobs with ``policy``'s (None: replay and
    tests without a scheduler, nothing to do)."""
    if scheduler is None:
        return
    for job in scheduler.jobs():
        if job["id"].startswith(PREFIX):
            scheduler.remove(job["id"])
    for s in policy.schedules:
        if s.kind != "cron":
            continue

        def run(a: Action = s.action) -> None:
            actions.act(a, "schedule", "schedule")

        scheduler.add_cron(f"{PREFIX}{s.id}", s.cron, run)
