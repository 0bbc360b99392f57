"""The policy's rules: the conditions on the monitors' signals (drift, OOD p-value,
accuracy, power, silent or saturated layers), each rule's action and cooldown, and the
embedded default's two rules."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
)

from regulator.policy.sections import MAX_COUNT, MAX_SECONDS, NAME_PATTERN, Action, Section

# --- rules ----------------------------------------------------------------------------


class DriftDetected(Section):
    """The sequential change detector has raised an alarm."""

    signal: Literal["drift_detected"] = "drift_detected"
    for_s: float = Field(default=0.0, ge=0, le=MAX_SECONDS)


class OodPvalueBelow(Section):
    """The OOD p-value has stayed below ``threshold`` for ``for_s`` seconds."""

    signal: Literal["ood_pvalue_below"] = "ood_pvalue_below"
    threshold: float = Field(gt=0, le=1)
    for_s: float = Field(default=30.0, ge=0, le=MAX_SECONDS)


class AccuracyBelow(Section):
    """Accuracy from delayed labels is below ``threshold``, over at least
    ``last_n_labels`` labels (at most ``monitors.accuracy_window_labels``)."""

    signal: Literal["accuracy_below"] = "accuracy_below"
    threshold: float = Field(ge=0, le=1)
    last_n_labels: int = Field(default=50, ge=1, le=MAX_COUNT)
    for_s: float = Field(default=0.0, ge=0, le=MAX_SECONDS)


class PowerAbove(Section):
    """Power has stayed above ``watts`` for ``for_s`` seconds."""

    signal: Literal["power_above"] = "power_above"
    watts: float = Field(gt=0, le=1e6)
    for_s: float = Field(default=60.0, ge=0, le=MAX_SECONDS)


class LayerSilent(Section):
    """Some layer (of ``layers``, or any when empty) has been silent for ``for_s`` s."""

    signal: Literal["layer_silent"] = "layer_silent"
    layers: tuple[Annotated[str, Field(min_length=1, max_length=64)], ...] = Field(
        default=(), max_length=64
    )
    for_s: float = Field(default=30.0, ge=0, le=MAX_SECONDS)


class LayerSaturated(Section):
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


class Rule(Section):
    """When ``condition`` holds, do ``action``; then wait ``cooldown_s`` before again."""

    name: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    condition: Condition
    action: Action
    cooldown_s: float = Field(default=300.0, ge=0, le=MAX_SECONDS)


def default_rules() -> tuple[Rule, ...]:
    return (
        Rule(name="drift", condition=DriftDetected(), action="recalibrate_supervised"),
        Rule(
            name="low-accuracy",
            condition=AccuracyBelow(threshold=0.7, last_n_labels=50),
            action="recalibrate_supervised",
        ),
    )
