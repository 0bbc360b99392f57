"""The policy's ``schedules`` as scheduler jobs that carry out their action through the
one action table (trigger ``schedule``); re-installed whole on a policy reload."""

from __future__ import annotations

from regulator.policy.model import Action, Policy
from regulator.service.actions import ActionTable
from regulator.service.scheduler import Scheduler

__all__ = ["PREFIX", "install_schedules"]

PREFIX = "schedule-"
"""Job ids of the policy's schedules: ``schedule-<id>``."""


def install_schedules(scheduler: Scheduler | None, policy: Policy, actions: ActionTable) -> None:
    """Replace the scheduler's schedule jobs with ``policy.schedules`` (None: replay and
    tests without a scheduler, nothing to do)."""
    if scheduler is None:
        return
    for job in scheduler.jobs():
        if job["id"].startswith(PREFIX):
            scheduler.remove(job["id"])
    for s in policy.schedules:

        def run(a: Action = s.action) -> None:
            actions.act(a, "schedule", "schedule")

        if s.kind == "interval":
            scheduler.add_interval(f"{PREFIX}{s.id}", s.every_s, run)
        else:
            scheduler.add_cron(f"{PREFIX}{s.id}", s.cron, run)
