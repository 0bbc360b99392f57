"""The policy file: frozen pydantic models, and the loader that turns a file into one.

Every section has defaults, so an empty file (or no file at all) is the embedded
default: the shipped ``nanosensor`` prior on a simulated ``loihi`` chip, a simulated
environment that shifts every three minutes with labels for 30 % of the samples, two
rules (drift → supervised recalibration; accuracy below 0.7 over 50 labels → supervised
recalibration) and the HTTP API on 127.0.0.1:9890. ``deploy/policies/default.yaml``
spells the same policy out with every field commented.

Units are in the field names or docstrings: seconds (``_s``), watts, joules (``_j``),
samples per second (``rate_hz``).

>>> policy = Policy()
>>> policy.http.port, policy.device.profile, [r.name for r in policy.rules]
(9890, 'loihi', ['drift', 'low-accuracy'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from regulator.errors import ConfigError

__all__ = [
    "MAX_COUNT",
    "MAX_N_STEPS",
    "MAX_PATH",
    "MAX_SECONDS",
    "MAX_SEED",
    "RECALIBRATION_ACTIONS",
    "AccuracyBelow",
    "Action",
    "AlertsConfig",
    "Condition",
    "CronSchedule",
    "DeviceConfig",
    "DriftDetected",
    "HttpConfig",
    "HttpSource",
    "IntervalSchedule",
    "LayerSaturated",
    "LayerSilent",
    "LoggingConfig",
    "ModelConfig",
    "MonitorsConfig",
    "OodPvalueBelow",
    "Policy",
    "PowerAbove",
    "RecalibrationConfig",
    "ReplaySource",
    "Rule",
    "Schedule",
    "ShiftSchedule",
    "SimulatedSource",
    "Source",
    "StorageConfig",
    "load_policy",
    "parse_policy",
    "policy_json_schema",
]

from regulator.policy.recalibration import (
    AlertsConfig,
    CronSchedule,
    IntervalSchedule,
    RecalibrationConfig,
    Schedule,
)
from regulator.policy.rules import (
    AccuracyBelow,
    Condition,
    DriftDetected,
    LayerSaturated,
    LayerSilent,
    OodPvalueBelow,
    PowerAbove,
    Rule,
    default_rules,
)
from regulator.policy.sections import (
    MAX_COUNT,
    MAX_N_STEPS,
    MAX_PATH,
    MAX_SECONDS,
    MAX_SEED,
    RECALIBRATION_ACTIONS,
    TOKEN_HELP,
    Action,
    DeviceConfig,
    HttpConfig,
    HttpSource,
    LoggingConfig,
    ModelConfig,
    MonitorsConfig,
    ReplaySource,
    Section,
    ShiftSchedule,
    SimulatedSource,
    Source,
    StorageConfig,
)

# --- the policy -----------------------------------------------------------------------


class Policy(Section):
    """A whole policy file. ``Policy()`` is the embedded default."""

    device: DeviceConfig = Field(default_factory=DeviceConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    source: Source = Field(default_factory=SimulatedSource)
    monitors: MonitorsConfig = Field(default_factory=MonitorsConfig)
    rules: tuple[Rule, ...] = Field(default_factory=default_rules, max_length=256)
    recalibration: RecalibrationConfig = Field(default_factory=RecalibrationConfig)
    schedules: tuple[Schedule, ...] = Field(default=(), max_length=256)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    state_dir: str = Field(default="state", min_length=1, max_length=MAX_PATH)
    """Registry, event log, buffers; ``--state-dir`` overrides it."""

    token: SkipJsonSchema[None] = Field(default=None, exclude=True, repr=False)
    """Always refused when given: see ``TOKEN_HELP``."""

    @field_validator("token", mode="before")
    @classmethod
    def _no_literal_token(cls, value: Any) -> None:
        raise PydanticCustomError("literal_token", TOKEN_HELP)

    @field_validator("rules")
    @classmethod
    def _unique_rule_names(cls, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
        _refuse_duplicates("rule name", [r.name for r in rules])
        return rules

    @field_validator("schedules")
    @classmethod
    def _unique_schedule_ids(cls, schedules: tuple[Any, ...]) -> tuple[Any, ...]:
        _refuse_duplicates("schedule id", [s.id for s in schedules])
        return schedules

    @model_validator(mode="after")
    def _accuracy_rules_fit_window(self) -> Policy:
        window = self.monitors.accuracy_window_labels
        for i, rule in enumerate(self.rules):
            cond = rule.condition
            if isinstance(cond, AccuracyBelow) and cond.last_n_labels > window:
                raise PydanticCustomError(
                    "window",
                    "rules.{i}.condition.last_n_labels ({n}) exceeds "
                    "monitors.accuracy_window_labels ({w})",
                    {"i": i, "n": cond.last_n_labels, "w": window},
                )
        return self

    def with_overrides(self, overrides: Mapping[str, Any]) -> Policy:
        """A new, validated policy with dotted fields replaced (``{"http.port": 0}``).

        >>> Policy().with_overrides({"http.port": 9000, "state_dir": "/tmp/s"}).http.port
        9000
        """
        data = self.model_dump(mode="json")
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        return parse_policy(data, origin="overrides")


def _refuse_duplicates(what: str, names: Sequence[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise PydanticCustomError(
                "duplicate", "duplicate {what} '{name}'", {"what": what, "name": name}
            )
        seen.add(name)


# --- loading --------------------------------------------------------------------------

# Tags that pydantic inserts into error locations of tagged unions; a user's file does
# not contain them, so they are dropped from the dotted paths we report.
_UNION_TAGS: dict[str, frozenset[str]] = {
    "source": frozenset({"simulated", "replay", "http"}),
    "condition": frozenset(
        {
            "drift_detected",
            "ood_pvalue_below",
            "accuracy_below",
            "power_above",
            "layer_silent",
            "layer_saturated",
        }
    ),
    "schedules": frozenset({"interval", "cron"}),
}


def _dotted(loc: Sequence[int | str]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        owner = loc[i - 1] if i >= 1 else None
        if isinstance(owner, int) and i >= 2:
            owner = loc[i - 2]
        if isinstance(item, str) and isinstance(owner, str) and item in _UNION_TAGS.get(owner, ()):
            continue
        parts.append(str(item))
    return ".".join(parts) or "(top level)"


def format_validation_error(error: ValidationError) -> list[str]:
    """One line per error, ``dotted.path: message``; input values are not echoed
    where they could be secrets."""
    lines = []
    for err in error.errors(include_url=False):
        path = _dotted(err["loc"])
        line = f"{path}: {err['msg']}"
        value = err.get("input")
        if (
            "token" not in path
            and err["type"] not in ("missing", "extra_forbidden")
            and isinstance(value, str | int | float | bool)
        ):
            line += f" (got {value!r})"
        lines.append(line)
    return lines


def parse_policy(data: Any, origin: str = "policy") -> Policy:
    """Validate already-parsed data (a mapping, or None for the default) into a Policy.

    Raises ConfigError listing every error with its dotted field path."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{origin}: the top level must be a mapping of sections, not {type(data).__name__}"
        )
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        lines = format_validation_error(exc)
    except RecursionError:  # pydantic's own guard should catch it first; never a traceback
        lines = ["(top level): nesting too deep"]
    else:
        from regulator.policy.plugins import plugin_name_errors

        lines = plugin_name_errors(policy)
        if not lines:
            return policy
    noun = "error" if len(lines) == 1 else "errors"
    body = "\n".join(f"  {line}" for line in lines)
    raise ConfigError(f"{origin}: invalid policy ({len(lines)} {noun}):\n{body}") from None


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of the policy file (for editors and documentation)."""
    return Policy.model_json_schema()


# Reading files (size, nesting and file-type limits) lives in its own module; it is
# re-exported here, where callers have always found it.
from regulator.policy.loader import load_policy  # noqa: E402
