"""A fleet device as a Ray actor: a :class:`~regulator.fleet.device.DeviceRunner` in a
process of its own (its own monitors, rule engine, registry, state directory and
``/metrics``), driven by the supervisor one round at a time."""

from __future__ import annotations

import os
import socket
from typing import Any

from regulator.fleet.device import DeviceRunner
from regulator.policy.model import parse_policy

__all__ = ["DeviceActor", "remote_device"]


class DeviceActor:
    """The actor's body; ``policy`` is a policy as JSON data (validated again here, in
    the actor's process)."""

    def __init__(
        self, policy: dict[str, Any], state_dir: str, metrics_host: str, batch: int
    ) -> None:
        from regulator.service.logging import configure_logging

        p = parse_policy(policy, origin=f"device {policy['device']['id']}")
        configure_logging(p.device.id, p.logging.level, fmt=p.logging.format)
        self.runner = DeviceRunner(p, state_dir, metrics_host=metrics_host, batch=batch)
        self.host = metrics_host

    def step(self, n: int) -> dict[str, Any]:
        return self.runner.step(n).to_dict()

    def report(self) -> dict[str, Any]:
        return self.runner.report().to_dict()

    def pid(self) -> int:
        return os.getpid()

    def metrics_target(self) -> str:
        """``host:port`` of this device's ``/metrics``, as Prometheus should scrape it
        (the node's address when listening on every interface)."""
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            import ray

            host = ray.util.get_node_ip_address() or socket.gethostname()
        return f"{host}:{self.runner.metrics_port}"

    def close(self) -> None:
        self.runner.close()


def remote_device(cpus: float) -> Any:
    """The Ray actor class of :class:`DeviceActor` with ``cpus`` CPUs. No restarts by
    Ray: the supervisor notices a dead actor and starts a new one itself."""
    import ray

    return ray.remote(DeviceActor).options(num_cpus=cpus, max_restarts=0)
