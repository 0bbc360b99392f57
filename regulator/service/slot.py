"""The serving slot: the one writer of what is served.

It alone loads a version, swaps a new one in, rolls back, and sets the time steps per
inference (the model's own, the policy's ``model.n_steps``, or the low-power count), so
that every model it serves, whatever brought it in, runs in the current power mode. A
swap is one reference assignment and touches no file: the new model is loaded (files
read, OOD monitor built) before it, off the serving thread when the caller is a
recalibration job. The slot loads only versions the registry hands it checked (at
start, at rollback) or has just stored itself, so it does not hash their bytes again.

The slot also ages the chip: conductance drift (:meth:`ChipInstance.advance`) advances
with the runtime's clock times ``device.drift_speedup``; writing a model's weights (a
swap, a rollback) starts a fresh chip, as reprogramming resets drift.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regulator.errors import ConfigError
from regulator.meta.model import ChipModel, ModelBundle
from regulator.monitor.stream import OODMonitor
from regulator.policy.model import MonitorsConfig, Policy
from regulator.registry import Registry
from regulator.service.inputs import InputCheck
from regulator.turns import checkpoint

__all__ = ["Served", "ServingSlot", "make_ood", "prime_detector"]

log = logging.getLogger(__name__)


@dataclass
class Served:
    """What serves right now; replaced whole on a swap."""

    version: str
    bundle: ModelBundle
    model: ChipModel
    ood: OODMonitor
    check: InputCheck
    swapped_at: float


def make_ood(calib: dict[str, Any] | None, monitors: MonitorsConfig) -> OODMonitor:
    """The OOD monitor of a model folder's calibration, with the policy's detector."""
    if not calib:
        raise ConfigError("the model folder has no OOD calibration statistics")
    return OODMonitor(
        calib,
        detector=monitors.detector,
        detector_config={
            "mean_samples_between_false_alarms": monitors.mean_samples_between_false_alarms
        },
    )


def prime_detector(monitors: MonitorsConfig) -> None:
    """Compute (and cache) the drift detector's thresholds for every calibration size a
    recalibration can produce, so a swap does not spend ~0.1 s of CPU, and the GIL, on
    it while serving."""
    from regulator.meta.train import CALIBRATION_SIZES
    from regulator.monitor.detect import make_detector

    for n_cal in CALIBRATION_SIZES:
        make_detector(
            monitors.detector,
            mean_samples_between_false_alarms=monitors.mean_samples_between_false_alarms,
            n_calibration=n_cal,
        )


class ServingSlot:
    """Loads, swaps and rolls back the served model of one device.

    ``on_served(version, prior_family)`` is told of every model that starts serving
    (the ``regulator_model_info`` series)."""

    def __init__(
        self,
        policy: Policy,
        registry: Registry,
        prior: Path,
        t_s: float,
        on_served: Callable[[str, str], None],
    ) -> None:
        self._policy = policy
        self._registry = registry
        self._on_served = on_served
        self._lock = threading.RLock()
        self.low_power = False
        self._aged_to: float = t_s
        # Damaged versions are quarantined and the newest sound one served (issue 12).
        self._served: Served = registry.open_serving(prior, lambda v: self._load(v, t_s))
        self._announce(self._served)

    # -- reading -----------------------------------------------------------------------

    @property
    def served(self) -> Served:
        return self._served

    @property
    def chip_age_s(self) -> float:
        return float(self._served.model.chip.age_s)

    def n_steps(self, bundle: ModelBundle) -> int:
        """Time steps per inference for ``bundle`` in the current power mode."""
        if self.low_power:
            rc = self._policy.recalibration
            return rc.low_power_n_steps or max(1, bundle.cfg.n_steps // 2)
        return self._policy.model.n_steps or bundle.cfg.n_steps

    # -- changing ----------------------------------------------------------------------

    def load(self, version: str, t_s: float) -> Served:
        """Load ``version`` (not yet serving): for a swap prepared off the serving path.
        ``version`` was just added and promoted by this process (checksums not hashed
        again: see :meth:`Registry.add`)."""
        return self._load(version, t_s)

    def swap(self, new: Served) -> str:
        """Serve ``new`` (loaded by :meth:`load`); returns the version it replaced."""
        with self._lock:
            new.model.n_steps = self.n_steps(new.bundle)  # the power mode of *now*
            old, self._served = self._served.version, new
        self._announce(new)
        return old

    def rollback(self, t_s: float) -> tuple[str, str]:
        """Serve the previous good version; ``(from, to)``. RegistryError if none."""
        version = self._registry.rollback()
        old = self.swap(self._load(version, t_s))
        return old, version

    def set_low_power(self, on: bool) -> int:
        """Enter or leave low power; returns the time steps now in force."""
        with self._lock:
            self.low_power = on
            s = self._served
            s.model.n_steps = self.n_steps(s.bundle)
            return s.model.n_steps

    def apply(self, policy: Policy) -> None:
        """A reloaded policy: time steps and the OOD detector follow it (the detector
        restarts: its windows and threshold are the policy's now)."""
        with self._lock:
            old_monitors = self._policy.monitors
            self._policy = policy
            s = self._served
            s.model.n_steps = self.n_steps(s.bundle)
            if policy.monitors != old_monitors:
                s.ood = make_ood(s.bundle.calibration.get("ood"), policy.monitors)

    def age(self, t_s: float) -> None:
        """Let the chip age to time ``t_s`` (seconds on the runtime's clock)."""
        dt = t_s - self._aged_to
        if dt <= 0:
            return
        self._aged_to = t_s
        model = self._served.model
        speed = self._policy.device.drift_speedup
        if speed > 0 and model.chip.profile.drift_nu > 0:
            model.chip.advance(dt * speed)

    # -- internals ---------------------------------------------------------------------

    def _load(self, version: str, t_s: float) -> Served:
        policy = self._policy
        bundle = ModelBundle.load(self._registry.path(version), verified=True)
        if policy.device.profile != bundle.profile.name:
            from regulator.chip.profiles import load_profile

            bundle.profile = load_profile(policy.device.profile)
        checkpoint()  # a recalibration's load takes turns with serving (regulator.turns)
        model = ChipModel(bundle, seed=policy.device.seed)
        model.n_steps = self.n_steps(bundle)
        checkpoint()
        ood = make_ood(bundle.calibration.get("ood"), policy.monitors)
        return Served(version, bundle, model, ood, InputCheck.for_bundle(bundle), t_s)

    def _announce(self, s: Served) -> None:
        self._on_served(s.version, str(s.bundle.task.get("family", "unknown")))
        log.info("serving model %s", s.version)
