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
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from regulator.errors import ConfigError

__all__ = [
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

Action = Literal[
    "recalibrate_supervised", "recalibrate_label_free", "rollback", "low_power", "alert_only"
]
"""What a rule, a schedule or an alert asks the daemon to do."""

RECALIBRATION_ACTIONS: frozenset[str] = frozenset(
    {"recalibrate_supervised", "recalibrate_label_free"}
)
"""Actions that spend learning energy and count towards ``recalibration.max_per_hour``."""

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
MAX_SECONDS = 366 * 86_400.0
"""Upper bound of every duration, period and timer (one leap year, seconds): beyond
it a timer is a typo, and an infinite one overflows the integers it feeds."""
MAX_SEED = 2**32 - 1
"""Seeds feed numpy and torch generators; both take this range."""
MAX_N_STEPS = 1024
"""Time steps per sample: a forward of a batch must stay well under a second, so that
SIGTERM is honoured promptly."""
MAX_COUNT = 1_000_000
"""Upper bound of window sizes, queue lengths, buffers and label counts."""
MAX_PATH = 4096

_TOKEN_HELP = (
    "a literal token is not allowed in the policy file; put it in the environment "
    "variable named by http.token_env (default REGULATOR_TOKEN) or in the file named "
    "by http.token_file"
)


class _Section(BaseModel):
    # No NaN or infinity anywhere: every float of a policy feeds a timer, a window or a
    # threshold, and an infinite period overflows the integers computed from it.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# --- device and model -----------------------------------------------------------------


class DeviceConfig(_Section):
    """The chip instance: its id (the ``device`` label of every metric) and hardware."""

    id: str = Field(default="chip0", min_length=1, max_length=64, pattern=_NAME)
    profile: str = Field(default="loihi", min_length=1, max_length=64, pattern=_NAME)
    """A chip profile name (``ideal``, ``loihi``, ``memristive``, …); checked at start-up."""
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    """Fixes the device mismatch of this chip instance, and the simulated environment."""
    drift_speedup: float = Field(default=1.0, ge=0, le=1e9)
    """Seconds of conductance drift per second of the chip's uptime (0: the chip does
    not age). Only profiles with drift (``memristive``) age; ``ideal`` and ``loihi`` do
    not, whatever this says. Above 1 it compresses months of ageing into a test run."""


class ModelConfig(_Section):
    """The meta-trained prior to serve and adapt from."""

    prior: str = Field(default="models/nanosensor", min_length=1, max_length=MAX_PATH)
    """A model folder; a relative path is resolved by the service (working directory,
    then the repository root)."""
    n_steps: int | None = Field(default=None, ge=1, le=MAX_N_STEPS)
    """Time steps per sample; None keeps the model's own."""


# --- sources --------------------------------------------------------------------------


class ShiftSchedule(_Section):
    """How the simulated environment shifts over time."""

    kind: Literal["none", "abrupt", "gradual", "recurring"] = "abrupt"
    period_s: float = Field(default=180.0, gt=0, le=MAX_SECONDS)
    """Seconds between shifts (abrupt, recurring) or for one full ramp (gradual)."""
    magnitude: float = Field(default=1.0, ge=0, le=100)
    """Size of a shift, in units of the family's typical environment spread."""


class SimulatedSource(_Section):
    """Samples from a task family's simulated environment, with delayed labels."""

    kind: Literal["simulated"] = "simulated"
    family: str = Field(default="nanosensor", min_length=1, max_length=64, pattern=_NAME)
    schedule: ShiftSchedule = Field(default_factory=ShiftSchedule)
    rate_hz: float = Field(default=20.0, gt=0, le=100_000)
    """Samples per second."""
    label_fraction: float = Field(default=0.3, ge=0, le=1)
    """Fraction of samples whose label is fed back."""
    label_delay_samples: int = Field(default=10, ge=0, le=MAX_COUNT)
    """A label arrives this many samples after its sample."""


class ReplaySource(_Section):
    """Recorded labelled data files, in order, as one stream (one segment per file)."""

    kind: Literal["replay"] = "replay"
    files: tuple[Annotated[str, Field(min_length=1, max_length=MAX_PATH)], ...] = Field(
        min_length=1, max_length=10_000
    )
    rate_hz: float | None = Field(default=None, gt=0, le=100_000)
    """Samples per second; None replays as fast as possible, in simulated time."""
    label_fraction: float = Field(default=0.0, ge=0, le=1)
    """Fraction of samples whose label is fed back (after ``label_delay_samples``)."""
    label_delay_samples: int = Field(default=0, ge=0, le=MAX_COUNT)
    labels_per_class_at_segment_start: int = Field(default=0, ge=0, le=10_000)
    """Labelled samples per class revealed at the start of each file (segment)."""


class HttpSource(_Section):
    """Samples pushed to ``POST /v1/samples``."""

    kind: Literal["http"] = "http"
    queue_size: int = Field(default=1024, ge=1, le=1_000_000)
    """Samples waiting to be served; beyond it pushes are rejected and counted."""
    clock: Literal["wall", "sample"] = "wall"
    """``sample``: the runtime's clocks (durations, and the budget's UTC day) are the
    pushed samples' own ``t`` (seconds), as replay's simulated clock, so recorded data
    pushed at any pace is served, ticked and recalibrated on its own timeline, in
    replay's order (:mod:`regulator.service.loop`); a sample or label without ``t`` is
    taken at the time now."""


def _source_kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return str(value.get("kind", "simulated"))
    return str(getattr(value, "kind", "simulated"))


Source = Annotated[
    Annotated[SimulatedSource, Tag("simulated")]
    | Annotated[ReplaySource, Tag("replay")]
    | Annotated[HttpSource, Tag("http")],
    Discriminator(
        _source_kind,
        custom_error_type="source_kind",
        custom_error_message="source.kind must be simulated, replay or http",
    ),
]


# --- monitors -------------------------------------------------------------------------


class MonitorsConfig(_Section):
    """Plug-in names and settings of the monitors."""

    ood_scorer: str = Field(default="mahalanobis", max_length=64, pattern=_NAME)
    """OOD scorer name; unknown names are refused at start-up with the valid ones."""
    detector: str = Field(default="cusum", max_length=64, pattern=_NAME)
    """Sequential change detector name, run on the OOD p-values."""
    mean_samples_between_false_alarms: float = Field(default=5000.0, gt=1, le=1e8)
    """The detector's in-control average run length (samples per false alarm)."""
    accuracy_window_labels: int = Field(default=100, ge=1, le=MAX_COUNT)
    """Accuracy is computed over at most this many most recent labels."""
    spike_density_window_samples: int = Field(default=100, ge=1, le=MAX_COUNT)
    silent_threshold: float = Field(default=0.001, ge=0, le=1)
    """A layer whose windowed spike density (spikes per neuron per step) is at or
    below this is silent."""
    saturated_threshold: float = Field(default=0.5, gt=0, le=1)
    """A layer whose windowed spike density is at or above this is saturated."""
    power_window_s: float = Field(default=10.0, gt=0, le=MAX_SECONDS)
    """Power is energy over the last this many seconds, divided by them."""

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> MonitorsConfig:
        if self.silent_threshold >= self.saturated_threshold:
            raise PydanticCustomError(
                "threshold_order",
                "silent_threshold ({silent}) must be below saturated_threshold ({saturated})",
                {"silent": self.silent_threshold, "saturated": self.saturated_threshold},
            )
        return self


# --- rules ----------------------------------------------------------------------------


class DriftDetected(_Section):
    """The sequential change detector has raised an alarm."""

    signal: Literal["drift_detected"] = "drift_detected"
    for_s: float = Field(default=0.0, ge=0, le=MAX_SECONDS)


class OodPvalueBelow(_Section):
    """The OOD p-value has stayed below ``threshold`` for ``for_s`` seconds."""

    signal: Literal["ood_pvalue_below"] = "ood_pvalue_below"
    threshold: float = Field(gt=0, le=1)
    for_s: float = Field(default=30.0, ge=0, le=MAX_SECONDS)


class AccuracyBelow(_Section):
    """Accuracy from delayed labels is below ``threshold``, over at least
    ``last_n_labels`` labels (at most ``monitors.accuracy_window_labels``)."""

    signal: Literal["accuracy_below"] = "accuracy_below"
    threshold: float = Field(ge=0, le=1)
    last_n_labels: int = Field(default=50, ge=1, le=MAX_COUNT)
    for_s: float = Field(default=0.0, ge=0, le=MAX_SECONDS)


class PowerAbove(_Section):
    """Power has stayed above ``watts`` for ``for_s`` seconds."""

    signal: Literal["power_above"] = "power_above"
    watts: float = Field(gt=0, le=1e6)
    for_s: float = Field(default=60.0, ge=0, le=MAX_SECONDS)


class LayerSilent(_Section):
    """Some layer (of ``layers``, or any when empty) has been silent for ``for_s`` s."""

    signal: Literal["layer_silent"] = "layer_silent"
    layers: tuple[Annotated[str, Field(min_length=1, max_length=64)], ...] = Field(
        default=(), max_length=64
    )
    for_s: float = Field(default=30.0, ge=0, le=MAX_SECONDS)


class LayerSaturated(_Section):
    """Some layer (of ``layers``, or any when empty) has been saturated for ``for_s`` s."""

    signal: Literal["layer_saturated"] = "layer_saturated"
    layers: tuple[Annotated[str, Field(min_length=1, max_length=64)], ...] = Field(
        default=(), max_length=64
    )
    for_s: float = Field(default=30.0, ge=0, le=MAX_SECONDS)


Condition = Annotated[
    DriftDetected | OodPvalueBelow | AccuracyBelow | PowerAbove | LayerSilent | LayerSaturated,
    Field(discriminator="signal"),
]


class Rule(_Section):
    """When ``condition`` holds, do ``action``; then wait ``cooldown_s`` before again."""

    name: str = Field(min_length=1, max_length=64, pattern=_NAME)
    condition: Condition
    action: Action
    cooldown_s: float = Field(default=300.0, ge=0, le=MAX_SECONDS)


def _default_rules() -> tuple[Rule, ...]:
    return (
        Rule(name="drift", condition=DriftDetected(), action="recalibrate_supervised"),
        Rule(
            name="low-accuracy",
            condition=AccuracyBelow(threshold=0.7, last_n_labels=50),
            action="recalibrate_supervised",
        ),
    )


# --- recalibration, schedules, alerts -------------------------------------------------


class RecalibrationConfig(_Section):
    """How a recalibration runs and how often it may."""

    k_shot: int = Field(default=5, ge=1, le=1000)
    """Labelled samples per class used to adapt."""
    holdout_per_class: int = Field(default=3, ge=1, le=1000)
    """Labelled samples per class, not used to adapt, to compare candidate and serving
    (``acceptance: holdout`` only)."""
    acceptance: Literal["holdout", "cross_validation"] = "holdout"
    """How a candidate is checked before the swap: on ``holdout_per_class`` labels per
    class kept out of the support, or by ``cross_validation`` on the support itself
    (every label adapts; each fold of one label per class is predicted by a candidate
    adapted without it, against the serving model on the same labels), which spends no
    label on the check."""
    max_shots_per_class: int | None = Field(default=None, ge=1, le=10_000)
    """Labels of the current environment per class a recalibration may adapt on (the
    newest); None: ``k_shot``. Above ``k_shot``, labels that arrive during a drift
    episode refine the served model (see ``refine_error_above``)."""
    refine_error_above: float | None = Field(default=None, ge=0, le=1)
    """During a drift episode, after the swap: once ``k_shot`` labels per class have
    arrived on the served model's own predictions and its error on them is above this,
    a supervised recalibration (trigger ``labels``) adapts on every label of the episode
    (up to ``max_shots_per_class``). Event-driven: nothing runs while the error stays
    below. None: off."""
    acceptance_margin: float = Field(default=0.0, ge=0, le=1)
    """The candidate is accepted if its held-out accuracy is at most this much below
    the serving model's."""
    max_per_hour: int = Field(default=4, ge=0, le=3600)
    """Recalibrations (all triggers) per rolling hour; 0 stops rule-triggered ones."""
    learning_energy_budget_j_per_day: float | None = Field(default=None, gt=0, le=1e9)
    """Learning energy (joules) per UTC day; None means no budget."""
    allow_label_free_fallback: bool = True
    """With fewer than ``k_shot`` labels per class, adapt label-free instead of waiting."""
    label_free_refresh_factor: float | None = Field(default=None, gt=1, le=16)
    """During a drift episode served by a model not adapted with labels (the prior or a
    label-free candidate), re-normalise again, label-free (trigger ``refresh``), each
    time the samples served since the change point have grown by this factor since the
    last label-free attempt (at 2: 32, 64, 128, … samples), on those samples only; a
    model adapted with labels is never refreshed. Each candidate is checked as
    any label-free one (on every label of the environment, else by OOD p-values) and is
    swapped in only if not worse. None: off (label-free re-normalisation runs once)."""
    label_free_refresh_max_samples: int = Field(default=1024, ge=32, le=2048)
    """The largest window a refresh re-normalises on (the newest samples since the change
    point; 2048 unlabelled inputs are kept); refreshes stop once one has used it."""
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    """A recalibration running longer is abandoned and the candidate discarded."""
    low_power_n_steps: int | None = Field(default=None, ge=1, le=MAX_N_STEPS)
    """Time steps per sample in low-power mode; None means half the model's."""


class IntervalSchedule(_Section):
    """Run ``action`` every ``every_s`` seconds."""

    id: str = Field(min_length=1, max_length=64, pattern=_NAME)
    kind: Literal["interval"] = "interval"
    every_s: float = Field(gt=0, le=MAX_SECONDS)
    action: Action


class CronSchedule(_Section):
    """Run ``action`` at the times of a crontab expression (five fields)."""

    id: str = Field(min_length=1, max_length=64, pattern=_NAME)
    kind: Literal["cron"] = "cron"
    cron: str = Field(max_length=200)
    timezone: str = Field(default="UTC", max_length=64)
    action: Action

    @field_validator("cron")
    @classmethod
    def _valid_crontab(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise PydanticCustomError(
                "crontab",
                "invalid crontab expression '{cron}': {why}",
                {"cron": value, "why": str(exc)},
            ) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError(
                "timezone", "unknown time zone '{tz}'", {"tz": value}
            ) from None
        return value


def _schedule_kind(value: Any) -> str | None:
    if isinstance(value, Mapping):
        if "kind" in value:
            return str(value["kind"])
        if "cron" in value:
            return "cron"
        if "every_s" in value:
            return "interval"
        return None
    return getattr(value, "kind", None)


Schedule = Annotated[
    Annotated[IntervalSchedule, Tag("interval")] | Annotated[CronSchedule, Tag("cron")],
    Discriminator(
        _schedule_kind,
        custom_error_type="schedule_kind",
        custom_error_message="a schedule needs kind: interval (with every_s) or cron (with cron)",
    ),
]


class AlertsConfig(_Section):
    """Which Alertmanager alerts (``POST /v1/alerts``) may trigger actions.

    A firing alert acts when it carries the label ``action_label`` whose value is one of
    ``allowed_actions``; resolved alerts never act."""

    enabled: bool = True
    action_label: str = Field(default="regulator_action", pattern=_ENV_NAME)
    allowed_actions: tuple[Action, ...] = Field(
        max_length=16,
        default=(
            "recalibrate_supervised",
            "recalibrate_label_free",
            "rollback",
        ),
    )


# --- http and logging -----------------------------------------------------------------


class HttpConfig(_Section):
    """HTTP bind address and where the bearer token comes from (never this file)."""

    host: str = Field(default="127.0.0.1", min_length=1, max_length=253)
    port: int = Field(default=9890, ge=0, le=65535)
    """0 picks a free port."""
    token_env: str = Field(default="REGULATOR_TOKEN", pattern=_ENV_NAME)
    """Environment variable holding the token for mutating routes."""
    token_file: str | None = Field(default=None, min_length=1, max_length=MAX_PATH)
    """A file holding the token (first line); takes precedence over ``token_env``."""
    max_body_bytes: int = Field(default=1 << 20, ge=1, le=64 << 20)
    max_json_depth: int = Field(default=32, ge=2, le=1000)
    """Bodies nested deeper are refused (400) before they are parsed."""
    docs: Literal["loopback", "always", "never"] = "loopback"
    """``/openapi.json`` and ``/docs``: served when the daemon binds a loopback address
    (the default), always, or never."""

    token: SkipJsonSchema[None] = Field(default=None, exclude=True, repr=False)
    """Always refused when given: see ``_TOKEN_HELP``."""

    @field_validator("token", mode="before")
    @classmethod
    def _no_literal_token(cls, value: Any) -> None:
        raise PydanticCustomError("literal_token", _TOKEN_HELP)


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: Literal["json", "text"] = "json"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class StorageConfig(_Section):
    """Retention and disk use of the state directory (sizes in bytes)."""

    reserve_bytes: int = Field(default=64 << 20, ge=0, le=1 << 40)
    """Free space the daemon never eats into: a label, event or model version that would
    leave less free on the state directory's file system is refused (labels: 507) and
    counted, and writing resumes by itself when space returns."""
    keep_versions: int = Field(default=32, ge=2, le=100_000)
    """Registry versions kept whatever they are (the newest N)."""
    keep_served_versions: int = Field(default=256, ge=1, le=100_000)
    """Older versions that once served, kept for rollback and audit (the newest N of
    them); the first version (the shipped prior) and the served one are always kept."""
    event_log_max_bytes: int = Field(default=64 << 20, ge=4096, le=1 << 40)
    """The event log is rotated when it grows past this."""
    event_log_files: int = Field(default=2, ge=1, le=100)
    """Rotated event logs kept beside the live one (``events.jsonl.1`` …)."""
    max_labels: int = Field(default=10_000, ge=10, le=MAX_COUNT)
    """Labelled samples buffered (oldest dropped first)."""


# --- the policy -----------------------------------------------------------------------


class Policy(_Section):
    """A whole policy file. ``Policy()`` is the embedded default."""

    device: DeviceConfig = Field(default_factory=DeviceConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    source: Source = Field(default_factory=SimulatedSource)
    monitors: MonitorsConfig = Field(default_factory=MonitorsConfig)
    rules: tuple[Rule, ...] = Field(default_factory=_default_rules, max_length=256)
    recalibration: RecalibrationConfig = Field(default_factory=RecalibrationConfig)
    schedules: tuple[Schedule, ...] = Field(default=(), max_length=256)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    state_dir: str = Field(default="state", min_length=1, max_length=MAX_PATH)
    """Registry, event log, buffers; ``--state-dir`` overrides it."""

    token: SkipJsonSchema[None] = Field(default=None, exclude=True, repr=False)
    """Always refused when given: see ``_TOKEN_HELP``."""

    @field_validator("token", mode="before")
    @classmethod
    def _no_literal_token(cls, value: Any) -> None:
        raise PydanticCustomError("literal_token", _TOKEN_HELP)

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
