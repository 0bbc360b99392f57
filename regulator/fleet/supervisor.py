"""The fleet supervisor: one Ray actor per device, driven in rounds; a dead actor is
noticed and started again from its state directory while the others serve on.

Each round asks every device to serve ``samples_per_round`` samples, all at once, and
collects the answers. An actor that died (its process killed, its node lost) answers
with :class:`ray.exceptions.RayActorError`: the supervisor logs it, starts a new actor
on the same state directory (the registry's versions, the label buffer, the event log
and the samples served so far are all there) and rewrites the Prometheus targets file,
since the new actor listens on a new port. Nothing accepted is lost: a label is
accepted only once written and fsynced, a version only once in the registry.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from regulator.fleet.actor import remote_device
from regulator.fleet.config import Fleet
from regulator.fleet.targets import write_targets
from regulator.service.executor_ray import connect

__all__ = ["FleetSupervisor", "RoundResult"]

log = logging.getLogger(__name__)


@dataclass
class RoundResult:
    """One round: each device's report (as :class:`~regulator.fleet.device.DeviceReport`
    data), the devices restarted in it, and its wall time (seconds)."""

    reports: dict[str, dict[str, Any]]
    restarted: list[str] = field(default_factory=list)
    wall_s: float = 0.0


class FleetSupervisor:
    """Start, drive, heal and stop a fleet's actors.

    ``address`` is :func:`~regulator.service.executor_ray.connect`'s (None: a local,
    loopback-only Ray instance of ``num_cpus`` CPUs, unless Ray is already initialised)."""

    def __init__(self, fleet: Fleet, address: str | None = None, num_cpus: int | None = None):
        self.fleet = fleet
        self.address = address
        self.num_cpus = num_cpus
        self.actors: dict[str, Any] = {}
        self.targets: dict[str, str] = {}
        self.restarts: dict[str, int] = dict.fromkeys(fleet.policies, 0)
        self._started_ray = False
        self._cls: Any = None

    def start(self) -> None:
        """Connect to Ray, start every device's actor and write the targets file."""
        self._started_ray = connect(self.address, num_cpus=self.num_cpus)
        self._cls = remote_device(self.fleet.config.actor_cpus)
        self.fleet.state_root.mkdir(parents=True, exist_ok=True)
        handles = {dev: self._spawn(dev) for dev in self.fleet.policies}
        for dev, h in handles.items():
            self._adopt(dev, h)
        self._write_targets()
        log.info("fleet of %d devices started", len(self.actors))

    def _spawn(self, device: str) -> Any:
        cfg = self.fleet.config
        policy = self.fleet.policies[device].model_dump(mode="json")
        state = self.fleet.state_root / device
        return self._cls.remote(policy, str(state), cfg.metrics_host, cfg.batch)

    def _adopt(self, device: str, handle: Any) -> None:
        import ray

        self.targets[device] = ray.get(handle.metrics_target.remote())
        self.actors[device] = handle

    def _write_targets(self) -> None:
        write_targets(self.fleet.targets_file, self.targets)

    def restart(self, device: str) -> None:
        """Start ``device`` again on its state directory (its old actor is gone)."""
        import ray

        old = self.actors.pop(device, None)
        if old is not None:
            ray.kill(old, no_restart=True)
        self.restarts[device] += 1
        self._adopt(device, self._spawn(device))
        self._write_targets()
        log.warning("device %s restarted from its state directory", device)

    def round(self, n: int | None = None) -> RoundResult:
        """Every device serves ``n`` samples (default ``samples_per_round``); a device
        whose actor died is restarted and reports where its state left it."""
        import ray
        from ray.exceptions import RayActorError

        n = self.fleet.config.samples_per_round if n is None else n
        t0 = time.perf_counter()
        refs = {dev: h.step.remote(n) for dev, h in self.actors.items()}
        out = RoundResult({})
        for dev, ref in refs.items():
            try:
                out.reports[dev] = ray.get(ref)
            except RayActorError as err:
                log.error("device %s: actor died (%s); restarting it", dev, type(err).__name__)
                self.restart(dev)
                out.restarted.append(dev)
                out.reports[dev] = ray.get(self.actors[dev].report.remote())
        out.wall_s = time.perf_counter() - t0
        return out

    def run(self, rounds: int | None = None, stop: threading.Event | None = None) -> int:
        """Rounds until ``rounds`` are done or ``stop`` is set; the samples served."""
        served, i = 0, 0
        while (rounds is None or i < rounds) and not (stop is not None and stop.is_set()):
            res = self.round()
            served += sum(self.fleet.config.samples_per_round for _ in res.reports)
            i += 1
            log.info(
                "round %d: %d devices, %.1f samples/s, versions %s",
                i,
                len(res.reports),
                len(res.reports) * self.fleet.config.samples_per_round / max(res.wall_s, 1e-9),
                {d: r["version"] for d, r in res.reports.items()},
            )
        return served

    def pid(self, device: str) -> int:
        """The process id of ``device``'s actor."""
        import ray

        return int(ray.get(self.actors[device].pid.remote()))

    def shutdown(self) -> None:
        """Close every device (state flushed), stop the actors, and Ray if we started it."""
        import ray

        for dev, h in self.actors.items():
            try:
                ray.get(h.close.remote(), timeout=30)
            except Exception as err:  # a dead or stuck actor: killed below either way
                log.warning("device %s did not close cleanly: %s", dev, err)
            ray.kill(h, no_restart=True)
        self.actors.clear()
        if self._started_ray:
            ray.shutdown()
