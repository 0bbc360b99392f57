"""Chip profiles: what a named piece of neuromorphic hardware does to a network.

A profile is validated once (frozen pydantic, unknown keys refused) and then trusted.
Built-in profiles are ``ideal``, ``loihi`` and ``memristive``; any other profile can be
loaded from a YAML or JSON file with the same fields.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from regulator.chip.energy import ENERGY_FIGURES
from regulator.errors import ConfigError, UnknownNameError


class MemristiveUpdate(BaseModel):
    """How a learning write changes a memristive conductance.

    A write moves the weight by whole conductance levels: potentiation by
    ``step_up`` levels and depression by ``step_down`` levels per pulse (asymmetric),
    each step shrinking as the device nears its bound (``nonlinearity``, 0 = linear),
    with Gaussian write noise of ``write_noise`` levels.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: int = Field(16, ge=2, le=1024, description="conductance levels per device")
    step_up: float = Field(1.0, gt=0, description="levels per potentiating pulse")
    step_down: float = Field(0.7, gt=0, description="levels per depressing pulse")
    nonlinearity: float = Field(0.5, ge=0, le=5, description="step shrink toward the bounds")
    write_noise: float = Field(0.3, ge=0, description="write noise, std in levels")


class ChipProfile(BaseModel):
    """One chip's precision, variability and energy figures.

    Units: weights in the network's own units; membrane and threshold in units of the
    threshold (v_th = 1); times in seconds.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    weight_bits: int | None = Field(None, ge=1, le=16, description="None = float weights")
    state_bits: int | None = Field(None, ge=2, le=32, description="None = float state")
    state_range: float = Field(8.0, gt=0, description="|v|, |i| clip in units of v_th")
    mismatch_weight_sigma: float = Field(
        0.0, ge=0, le=1, description="per-synapse gain, log-normal sigma"
    )
    mismatch_threshold_sigma: float = Field(
        0.0, ge=0, le=1, description="per-neuron threshold, relative sigma"
    )
    noise_weight_sigma: float = Field(
        0.0, ge=0, le=1, description="per-read weight noise, fraction of layer max"
    )
    noise_membrane_sigma: float = Field(
        0.0, ge=0, le=1, description="per-step membrane noise, units of v_th"
    )
    transmission_failure_p: float = Field(
        0.0, ge=0, lt=1, description="probability a synaptic event is lost"
    )
    stuck_at_zero_fraction: float = Field(0.0, ge=0, le=1)
    stuck_at_max_fraction: float = Field(0.0, ge=0, le=1)
    drift_nu: float = Field(
        0.0, ge=0, le=1, description="conductance drift exponent, w(t)=w0*(1+t/t0)^-nu"
    )
    drift_t0_s: float = Field(1.0, gt=0, description="drift reference time, seconds")
    memristive: MemristiveUpdate | None = None
    energy: str = Field("loihi", description="name of the per-event energy figure set")

    @model_validator(mode="after")
    def _check(self) -> ChipProfile:
        if self.stuck_at_zero_fraction + self.stuck_at_max_fraction > 1:
            raise ValueError("stuck_at_zero_fraction + stuck_at_max_fraction must be <= 1")
        if self.energy not in ENERGY_FIGURES:
            raise ValueError(f"energy must be one of {sorted(ENERGY_FIGURES)}, got {self.energy!r}")
        return self

    @property
    def is_noisy(self) -> bool:
        """Whether a forward draws random numbers (noise or transmission failure)."""
        return (
            self.noise_weight_sigma > 0
            or self.noise_membrane_sigma > 0
            or self.transmission_failure_p > 0
        )


BUILTIN_PROFILES: dict[str, ChipProfile] = {
    "ideal": ChipProfile(
        name="ideal",
        description="float32 weights and state, no noise: plain Norse dynamics",
    ),
    # Loihi: 1-9 bit weights (8 used here, with a per-layer exponent as Loihi's
    # weight scaling), 24-bit membrane state; digital, so no mismatch, noise or drift.
    "loihi": ChipProfile(
        name="loihi",
        description="Intel Loihi-like digital core: 8-bit weights, 24-bit state",
        weight_bits=8,
        state_bits=24,
        state_range=64.0,
        energy="loihi",
    ),
    # A phase-change / RRAM crossbar: 16 conductance levels (4 bits), large
    # device-to-device and read variability, lost events, stuck devices and drift.
    "memristive": ChipProfile(
        name="memristive",
        description="memristive crossbar: 4-bit conductances, mismatch, noise, drift",
        weight_bits=4,
        state_bits=16,
        state_range=16.0,
        mismatch_weight_sigma=0.1,
        mismatch_threshold_sigma=0.05,
        noise_weight_sigma=0.02,
        noise_membrane_sigma=0.02,
        transmission_failure_p=0.02,
        stuck_at_zero_fraction=0.01,
        stuck_at_max_fraction=0.005,
        drift_nu=0.02,
        drift_t0_s=1.0,
        memristive=MemristiveUpdate(),
        energy="memristive",
    ),
}


def _validation_message(err: ValidationError, where: str) -> str:
    lines = [f"invalid chip profile {where}:"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"  {path}: {e['msg']}")
    return "\n".join(lines)


def profile_from_dict(data: dict[str, Any], where: str = "") -> ChipProfile:
    """Validate a profile given as a mapping; errors name each bad field."""
    try:
        return ChipProfile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_validation_message(err, where or str(data.get("name", "")))) from None


def load_profile(name_or_path: str | Path | ChipProfile) -> ChipProfile:
    """A built-in profile by name, or one read from a YAML/JSON file.

    >>> load_profile("loihi").weight_bits
    8
    >>> load_profile("tpu")
    Traceback (most recent call last):
    ...
    regulator.errors.UnknownNameError: unknown chip profile 'tpu'; valid: ideal, loihi, memristive
    """
    if isinstance(name_or_path, ChipProfile):
        return name_or_path
    key = str(name_or_path)
    if key in BUILTIN_PROFILES:
        return BUILTIN_PROFILES[key]
    path = Path(key)
    if path.suffix.lower() in {".yaml", ".yml", ".json"}:
        if not path.is_file():
            raise ConfigError(f"chip profile file not found: {path}")
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (yaml.YAMLError, json.JSONDecodeError) as err:
            raise ConfigError(f"chip profile file {path} is not valid: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"chip profile file {path} must hold a mapping")
        return profile_from_dict(data, str(path))
    raise UnknownNameError("chip profile", key, BUILTIN_PROFILES)
