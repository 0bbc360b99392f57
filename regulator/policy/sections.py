"""The policy's base and its plain sections: the device and the model, the sample
source, the monitors, HTTP, logging and storage; the bounds every section shares
(:data:`MAX_SECONDS`, :data:`MAX_SEED`, ...) and the actions a rule, schedule or alert
may ask for. Rules are in :mod:`regulator.policy.rules`, recalibration, schedules and
alerts in :mod:`regulator.policy.recalibration`, the whole file in
:mod:`regulator.policy.model`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

Action = Literal[
    "recalibrate_supervised", "recalibrate_label_free", "rollback", "low_power", "alert_only"
]
"""What a rule, a schedule or an alert asks the daemon to do."""

RECALIBRATION_ACTIONS: frozenset[str] = frozenset(
    {"recalibrate_supervised", "recalibrate_label_free"}
)
"""Actions that spend learning energy and count towards ``recalibration.max_per_hour``."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
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

TOKEN_HELP = (
    "a literal token is not allowed in the policy file; put it in the environment "
    "variable named by http.token_env (default REGULATOR_TOKEN) or in the file named "
    "by http.token_file"
)


class Section(BaseModel):
    """A policy section: frozen, no unknown keys, every float finite."""

    # No NaN or infinity anywhere: every float of a policy feeds a timer, a window or a
    # threshold, and an infinite period overflows the integers computed from it.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# --- device and model -----------------------------------------------------------------


class DeviceConfig(Section):
    """The chip instance: its id (the ``device`` label of every metric) and hardware."""

    id: str = Field(default="chip0", min_length=1, max_length=64, pattern=NAME_PATTERN)
    profile: str = Field(default="loihi", min_length=1, max_length=64, pattern=NAME_PATTERN)
    """A chip profile name (``ideal``, ``loihi``, ``memristive``, …); checked at start-up."""
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    """Fixes the device mismatch of this chip instance, and the simulated environment."""
    drift_speedup: float = Field(default=1.0, ge=0, le=1e9)
    """Seconds of conductance drift per second of the chip's uptime (0: the chip does
    not age). Only profiles with drift (``memristive``) age; ``ideal`` and ``loihi`` do
    not, whatever this says. Above 1 it compresses months of ageing into a test run."""


class ModelConfig(Section):
    """The meta-trained prior to serve and adapt from."""

    prior: str = Field(default="models/nanosensor", min_length=1, max_length=MAX_PATH)
    """A model folder; a relative path is resolved by the service (working directory,
    then the repository root)."""
    n_steps: int | None = Field(default=None, ge=1, le=MAX_N_STEPS)
    """Time steps per sample; None keeps the model's own."""


# --- sources --------------------------------------------------------------------------


class ShiftSchedule(Section):
    """How the simulated environment shifts over time."""

    kind: Literal["none", "abrupt", "gradual", "recurring"] = "abrupt"
    period_s: float = Field(default=180.0, gt=0, le=MAX_SECONDS)
    """Seconds between shifts (abrupt, recurring) or for one full ramp (gradual)."""
    magnitude: float = Field(default=1.0, ge=0, le=100)
    """Size of a shift, in units of the family's typical environment spread."""


class SimulatedSource(Section):
    """Samples from a task family's simulated environment, with delayed labels."""

    kind: Literal["simulated"] = "simulated"
    family: str = Field(default="nanosensor", min_length=1, max_length=64, pattern=NAME_PATTERN)
    schedule: ShiftSchedule = Field(default_factory=ShiftSchedule)
    rate_hz: float = Field(default=20.0, gt=0, le=100_000)
    """Samples per second."""
    label_fraction: float = Field(default=0.3, ge=0, le=1)
    """Fraction of samples whose label is fed back."""
    label_delay_samples: int = Field(default=10, ge=0, le=MAX_COUNT)
    """A label arrives this many samples after its sample."""


class ReplaySource(Section):
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


class HttpSource(Section):
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


class MonitorsConfig(Section):
    """Plug-in names and settings of the monitors."""

    ood_scorer: str = Field(default="mahalanobis", max_length=64, pattern=NAME_PATTERN)
    """OOD scorer name; unknown names are refused at start-up with the valid ones."""
    detector: str = Field(default="cusum", max_length=64, pattern=NAME_PATTERN)
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


# --- http and logging -----------------------------------------------------------------


class HttpConfig(Section):
    """HTTP bind address and where the bearer token comes from (never this file)."""

    host: str = Field(default="127.0.0.1", min_length=1, max_length=253)
    port: int = Field(default=9890, ge=0, le=65535)
    """0 picks a free port."""
    token_env: str = Field(default="REGULATOR_TOKEN", pattern=ENV_NAME_PATTERN)
    """Environment variable holding the token for mutating routes."""
    token_file: str | None = Field(default=None, min_length=1, max_length=MAX_PATH)
    """A file holding the token (first line); takes precedence over ``token_env``."""
    max_body_bytes: int = Field(default=1 << 20, ge=1, le=64 << 20)
    max_json_depth: int = Field(default=32, ge=2, le=1000)
    """Bodies nested deeper are refused (400) before they are parsed."""
    metrics_max_age_s: float = Field(default=0.25, ge=0.0, le=10.0, allow_inf_nan=False)
    """A ``/metrics`` scrape may be answered with the latest render if it started at most
    this many seconds before (0: every scrape renders; a scrape with ``Cache-Control:
    no-cache`` always does). Bounds the render work that clients polling ``/metrics``
    in a loop take from serving; Prometheus scrapes every few seconds and never sees
    it."""
    docs: Literal["loopback", "always", "never"] = "loopback"
    """``/openapi.json`` and ``/docs``: served when the daemon binds a loopback address
    (the default), always, or never."""

    token: SkipJsonSchema[None] = Field(default=None, exclude=True, repr=False)
    """Always refused when given: see ``TOKEN_HELP``."""

    @field_validator("token", mode="before")
    @classmethod
    def _no_literal_token(cls, value: Any) -> None:
        raise PydanticCustomError("literal_token", TOKEN_HELP)


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: Literal["json", "text"] = "json"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class StorageConfig(Section):
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
