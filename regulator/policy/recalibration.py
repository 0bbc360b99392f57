"""The policy's recalibration section (how a recalibration runs, how often, its
acceptance check and learning-energy budget), its schedules (interval and cron) and
what Alertmanager's alerts map to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    Tag,
    field_validator,
)
from pydantic_core import PydanticCustomError

from regulator.policy.sections import (
    ENV_NAME_PATTERN,
    MAX_N_STEPS,
    MAX_SECONDS,
    NAME_PATTERN,
    Action,
    Section,
)

# --- recalibration, schedules, alerts -------------------------------------------------


class RecalibrationConfig(Section):
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


class IntervalSchedule(Section):
    """Run ``action`` every ``every_s`` seconds."""

    id: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    kind: Literal["interval"] = "interval"
    every_s: float = Field(gt=0, le=MAX_SECONDS)
    action: Action


class CronSchedule(Section):
    """Run ``action`` at the times of a crontab expression (five fields)."""

    id: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
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


class AlertsConfig(Section):
    """Which Alertmanager alerts (``POST /v1/alerts``) may trigger actions.

    A firing alert acts when it carries the label ``action_label`` whose value is one of
    ``allowed_actions``; resolved alerts never act."""

    enabled: bool = True
    action_label: str = Field(default="regulator_action", pattern=ENV_NAME_PATTERN)
    allowed_actions: tuple[Action, ...] = Field(
        max_length=16,
        default=(
            "recalibrate_supervised",
            "recalibrate_label_free",
            "rollback",
        ),
    )
