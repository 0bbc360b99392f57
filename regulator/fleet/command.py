"""``regulator fleet FILE``: check a fleet file, or run the fleet until stopped.

``--check`` validates the file and every device's policy (exit 0, or 2 with every
error naming its device and field path). Otherwise the fleet runs ``--rounds`` rounds
(default: until SIGTERM or Ctrl-C, which only set a flag: the round in progress ends,
every device closes its state, and the command exits 0).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TextIO

from regulator.fleet.config import load_fleet
from regulator.policy.model import SimulatedSource

__all__ = ["check_fleet", "run_fleet"]

log = logging.getLogger(__name__)


def check_fleet(path: Path, out: TextIO | None = None) -> int:
    """Validate ``path``; a one-line summary on ``out``. ConfigError (exit 2) if invalid."""
    fleet = load_fleet(path)
    out = sys.stdout if out is None else out
    shifted = [
        d
        for d, p in fleet.policies.items()
        if isinstance(p.source, SimulatedSource) and p.source.schedule.kind != "none"
    ]
    print(
        f"{path}: valid fleet of {len(fleet.policies)} devices "
        f"({len(shifted)} with shifts), state in {fleet.state_root}",
        file=out,
    )
    return 0


def run_fleet(path: Path, rounds: int | None, address: str | None, workers: int | None) -> int:
    """Run the fleet in ``path`` (see the module docstring)."""
    from regulator.fleet.supervisor import FleetSupervisor
    from regulator.service.logging import configure_logging

    fleet = load_fleet(path)
    configure_logging("fleet", "INFO", fmt="text")
    stop = threading.Event()
    interrupts = [0]

    def on_stop(signum: int, frame: FrameType | None) -> None:
        interrupts[0] += 1
        if interrupts[0] > 1 and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        stop.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    sup = FleetSupervisor(fleet, address=address, num_cpus=workers)
    sup.start()
    log.info("Prometheus targets: %s", fleet.targets_file)
    try:
        served = sup.run(rounds, stop)
    finally:
        sup.shutdown()
    log.info("fleet stopped after %d samples", served)
    return 0
