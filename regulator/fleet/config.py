"""The fleet file: which simulated chips make up a fleet and what differs between them.

A YAML (or TOML) file, validated into frozen pydantic models that forbid unknown keys.
Each device's policy is the base policy file (or the embedded default) with the
device's ``policy`` (a partial policy) merged over it, then its ``id``, ``seed`` and
``schedule`` set; every device's policy is validated whole. Errors name the device and
the field path (``devices.2 (chip2): policy.recalibration.k_shot: ...``) and exit 2.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "fleet.yaml").write_text(
...     "devices:\\n"
...     "  - {id: a, seed: 1}\\n"
...     "  - {id: b, seed: 2, schedule: {kind: abrupt, period_s: 30},"
...     " policy: {recalibration: {k_shot: 3}}}\\n")
>>> fleet = load_fleet(d / "fleet.yaml")
>>> [(p.device.id, p.device.seed, p.source.schedule.kind, p.recalibration.k_shot)
...  for p in fleet.policies.values()]
[('a', 1, 'none', 5), ('b', 2, 'abrupt', 3)]
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from regulator.errors import ConfigError
from regulator.policy.loader import read_policy_data
from regulator.policy.model import (
    MAX_PATH,
    MAX_SEED,
    Policy,
    ShiftSchedule,
    SimulatedSource,
    format_validation_error,
)

__all__ = ["DeviceEntry", "Fleet", "FleetConfig", "load_fleet", "merge"]

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
MAX_DEVICES = 10_000


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class DeviceEntry(_Model):
    """One chip of the fleet: its id (the ``device`` label), mismatch and environment
    seed, shift schedule, and policy overrides."""

    id: str = Field(min_length=1, max_length=64, pattern=_ID)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    """The chip's device mismatch and its simulated environment's draws."""
    schedule: ShiftSchedule | None = None
    """How this device's environment shifts; None: the base policy's
    (``kind: none`` when the fleet has no base policy)."""
    policy: dict[str, Any] = Field(default_factory=dict)
    """A partial policy merged over the base (mappings merged, other values replaced)."""


class FleetConfig(_Model):
    """A whole fleet file. ``base_policy`` is found from the file's folder; the state
    root and the targets file, outputs, from the working directory (as a policy's
    ``state_dir``)."""

    base_policy: str | None = Field(default=None, min_length=1, max_length=MAX_PATH)
    """The policy file every device starts from; None: the embedded default."""
    state_root: str = Field(default="fleet-state", min_length=1, max_length=MAX_PATH)
    """Each device's state directory is ``state_root/<id>``."""
    targets_file: str = Field(default="fleet-targets.json", min_length=1, max_length=MAX_PATH)
    """Prometheus ``file_sd`` targets (one per device), rewritten when an actor moves."""
    metrics_host: str = Field(default="127.0.0.1", min_length=1, max_length=255)
    """Where each device's ``/metrics`` listens (a free port each)."""
    samples_per_round: int = Field(default=100, ge=1, le=1_000_000)
    """Samples each device serves between the supervisor's health checks."""
    batch: int = Field(default=8, ge=1, le=64)
    """Samples per chip forward."""
    actor_cpus: float = Field(default=0.5, gt=0, le=64)
    """Ray CPUs reserved per device actor."""
    devices: tuple[DeviceEntry, ...] = Field(min_length=1, max_length=MAX_DEVICES)

    @field_validator("devices")
    @classmethod
    def _unique_ids(cls, devices: tuple[DeviceEntry, ...]) -> tuple[DeviceEntry, ...]:
        seen: set[str] = set()
        for d in devices:
            if d.id in seen:
                raise ValueError(f"duplicate device id {d.id!r}")
            seen.add(d.id)
        return devices


@dataclass(frozen=True)
class Fleet:
    """A validated fleet: its configuration, each device's whole policy (in file
    order) and the resolved paths."""

    config: FleetConfig
    policies: dict[str, Policy]
    state_root: Path
    targets_file: Path


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``: mappings recursively, the rest replaced.

    >>> merge({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"c": 3}, "l": [2]})
    {'a': {'b': 1, 'c': 3}, 'l': [2]}
    """
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = merge(old, value)
        else:
            out[key] = value
    return out


def _fail(origin: str, lines: list[str]) -> ConfigError:
    noun = "error" if len(lines) == 1 else "errors"
    body = "\n".join(f"  {line}" for line in lines)
    return ConfigError(f"{origin}: invalid fleet ({len(lines)} {noun}):\n{body}")


def _name_devices(lines: list[str], data: Any) -> list[str]:
    """``devices.2.seed: ...`` → ``devices.2 (chip2): seed: ...`` where the id is known."""
    devices = data.get("devices") if isinstance(data, Mapping) else None

    def name(m: re.Match[str]) -> str:
        i = int(m.group(1))
        ident = None
        if isinstance(devices, list) and i < len(devices) and isinstance(devices[i], Mapping):
            ident = devices[i].get("id")
        who = f" ({ident})" if isinstance(ident, str) else ""
        return f"devices.{i}{who}: " + (m.group(2) or "")

    return [re.sub(r"^devices\.(\d+)(?:\.|: )(.*)$", name, line) for line in lines]


def _device_policy(base: Mapping[str, Any], d: DeviceEntry) -> Policy | list[str]:
    data = merge(base, d.policy)
    data = merge(data, {"device": {"id": d.id, "seed": d.seed}})
    if d.schedule is not None:
        src = data.get("source", {})
        if isinstance(src, Mapping) and src.get("kind", "simulated") != "simulated":
            return [f"schedule: needs a simulated source (got {src.get('kind')!r})"]
        data = merge(data, {"source": {"schedule": d.schedule.model_dump(mode="json")}})
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        return [f"policy.{line}" for line in format_validation_error(exc)]
    from regulator.policy.plugins import plugin_name_errors

    lines = [f"policy.{line}" for line in plugin_name_errors(policy)]
    if not isinstance(policy.source, SimulatedSource):
        kind = policy.source.kind
        lines.append(f"policy.source.kind: a fleet device is simulated (got {kind!r})")
    return lines or policy


def load_fleet(path: Path | str) -> Fleet:
    """Read and validate a fleet file and every device's policy; ConfigError (exit 2)
    with every error, each naming its device and field path."""
    path = Path(path)
    data = read_policy_data(path)
    if not isinstance(data, Mapping):
        raise _fail(str(path), ["(top level): must be a mapping with 'devices'"])
    try:
        cfg = FleetConfig.model_validate(data)
    except ValidationError as exc:
        raise _fail(str(path), _name_devices(format_validation_error(exc), data)) from None
    here = path.parent

    def rel(p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else here / q

    if cfg.base_policy is None:
        # No base file: the embedded default, but a steady environment unless a device
        # says how it shifts.
        steady = SimulatedSource(schedule=ShiftSchedule(kind="none"))
        base: dict[str, Any] = Policy(source=steady).model_dump(mode="json")
    else:
        raw = read_policy_data(rel(cfg.base_policy))
        if raw is not None and not isinstance(raw, Mapping):
            raise _fail(str(path), ["base_policy: the top level must be a mapping of sections"])
        base = dict(raw or {})
    policies: dict[str, Policy] = {}
    errors: list[str] = []
    for i, d in enumerate(cfg.devices):
        got = _device_policy(base, d)
        if isinstance(got, Policy):
            policies[d.id] = got
        else:
            errors += [f"devices.{i} ({d.id}): {line}" for line in got]
    if errors:
        raise _fail(str(path), errors)
    return Fleet(cfg, policies, Path(cfg.state_root), Path(cfg.targets_file))
