"""One chip of a fleet: the daemon's :class:`~regulator.service.runtime.Runtime` and
:class:`~regulator.service.loop.ServiceLoop` over its own simulated environment, on a
simulated clock, with its ``/metrics`` on a port of its own.

Nothing here knows of Ray: :mod:`regulator.fleet.actor` runs a :class:`DeviceRunner`
in an actor, tests and benches may run it in-process. As in ``regulator replay``, time
is simulated (one sample every ``1 / rate_hz`` seconds) and a recalibration runs inline,
so a device serves as fast as its share of a CPU allows and two runs of the same
device agree. Everything accepted lives in the state directory (registry versions, the
label buffer, the event log, the learning budget) and the number of samples served is
written there after each round, so a runner restarted on the same directory goes on
from the next sample with its versions and labels intact. A round cut short by a kill
is served again from its first sample (the environment's draws are seeded, so the same
samples; labels are kept by sample id, so none is counted twice).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from regulator import atomic
from regulator.policy.model import Policy, SimulatedSource
from regulator.service.loop import ServiceLoop
from regulator.service.runtime import Runtime
from regulator.tasks.sources import FeedbackChannel, Source, SourceSample, make_source

__all__ = ["DeviceReport", "DeviceRunner"]

log = logging.getLogger(__name__)

PROGRESS_FILE = "fleet-progress.json"
"""In the device's state directory: the samples served so far (the simulated clock)."""


@dataclass(frozen=True)
class DeviceReport:
    """What a device has done so far (after a round)."""

    device: str
    served: int
    """Samples served since the device first started (across restarts)."""
    simulated_s: float
    version: str
    """The registry version now serving."""
    versions: tuple[str, ...]
    """Every registry version, oldest first."""
    labels: int
    """Labelled samples in the buffer."""
    recalibrations: int
    """Recalibrations run by this process (a restart starts again from 0)."""
    swaps: int
    """Of those, candidates swapped in."""
    detections: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _SimClock:
    """The device's simulated time (seconds); the source's pacing advances it."""

    def __init__(self, t_s: float) -> None:
        self.t = t_s

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt_s: float) -> None:
        self.t += dt_s


def _simulated_stream(policy: Policy, clock: _SimClock) -> Source:
    """The policy's simulated environment, paced on ``clock`` (the daemon's
    ``build_source`` paces on the wall clock)."""
    src = policy.source
    assert isinstance(src, SimulatedSource)  # checked by DeviceRunner
    every = max(1, int(src.schedule.period_s * src.rate_hz))
    sched: dict[str, Any] = {"kind": src.schedule.kind}
    if src.schedule.kind in ("abrupt", "gradual"):
        sched["every"] = every
    if src.schedule.kind == "gradual":
        sched["width"] = max(1, every // 4)
    if src.schedule.kind == "recurring":
        sched["period"] = every
    return make_source(
        "simulated",
        family=src.family,
        schedule=sched,
        seed=policy.device.seed,
        rate_hz=src.rate_hz,
        clock=clock,
        sleep=clock.sleep,
    )


class DeviceRunner:
    """Serve one simulated chip in rounds; see the module docstring.

    ``policy`` must have a simulated source. ``metrics_host`` and ``metrics_port``
    (0: a free one) are where ``/metrics`` of this device's registry listens; None
    serves none."""

    def __init__(
        self,
        policy: Policy,
        state_dir: Path | str,
        metrics_host: str | None = "127.0.0.1",
        metrics_port: int = 0,
        batch: int = 8,
    ) -> None:
        if not isinstance(policy.source, SimulatedSource):
            raise ValueError(f"device {policy.device.id}: a fleet device needs a simulated source")
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*")
        import torch

        torch.set_num_threads(1)  # one core's share per device
        self.policy = policy
        self.state_dir = Path(state_dir)
        self.batch = batch
        self.rate_hz = policy.source.rate_hz
        progress_file = self.state_dir / PROGRESS_FILE
        self.served = 0
        if progress_file.exists():
            self.served = int(atomic.read_json(progress_file)["served"])
        self.clock = _SimClock(self.served / self.rate_hz)
        self.runtime = Runtime(
            policy, self.state_dir, clock=self.clock, wall_clock=self.clock, inline_jobs=True
        )
        src = policy.source
        feedback = FeedbackChannel(
            src.label_delay_samples, src.label_fraction, seed=policy.device.seed
        )
        self.loop = ServiceLoop(self.runtime, feedback)
        self._samples = iter(_simulated_stream(policy, _SimClock(0.0)))
        for _ in range(self.served):  # the environment's draws go on where they stopped
            next(self._samples)
        self.metrics_port: int | None = None
        self._server: Any = None
        if metrics_host is not None:
            from prometheus_client import start_http_server

            self._server, _ = start_http_server(
                metrics_port, addr=metrics_host, registry=self.runtime.metrics_registry
            )
            self.metrics_port = int(self._server.server_port)
        log.info(
            "device %s: serving %s from sample %d",
            policy.device.id,
            self.runtime.serving.version,
            self.served,
        )

    def step(self, n: int) -> DeviceReport:
        """Serve the next ``n`` samples (labels as they come due, rule ticks, inline
        recalibrations), then persist how many were served."""
        end = self.served + n
        while self.served < end:
            chunk: list[SourceSample] = []
            for _ in range(min(self.batch, end - self.served)):
                chunk.append(next(self._samples))
                self.served += 1
            self.clock.t = chunk[-1].t
            for out in self.loop.serve(chunk, t=self.clock.t):
                if isinstance(out, Exception):
                    log.warning("device %s: sample rejected: %s", self.policy.device.id, out)
        atomic.write_json(self.state_dir / PROGRESS_FILE, {"served": self.served})
        return self.report()

    def report(self) -> DeviceReport:
        rt = self.runtime
        results = rt.results
        return DeviceReport(
            device=self.policy.device.id,
            served=self.served,
            simulated_s=self.clock.t,
            version=rt.serving.version,
            versions=tuple(m["version"] for m in rt.models()),
            labels=len(rt.state.labels),
            recalibrations=len(results),
            swaps=sum(1 for r in results if r.outcome == "accepted"),
            detections=len(rt.detections),
        )

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.runtime.close()
