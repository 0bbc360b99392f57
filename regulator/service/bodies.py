"""Request bodies of the HTTP API: frozen, strict pydantic models with examples.

Strict: a boolean is never taken for a number and a string never for a float, so
``{"y": true}`` or ``{"x": ["1"]}`` is a 422, not a label of class 1. Every number is
finite and bounded where it becomes a float or an int; identifiers are printable ASCII
without spaces. The JSON Schemas of these models, with their examples, are the request
bodies of the daemon's OpenAPI document (``/openapi.json``).

>>> FeedbackItem.model_validate({"sample_id": "s1", "y": 2}).y
2
>>> FeedbackItem.model_validate({"sample_id": "s1", "y": True})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 2 validation errors for FeedbackItem
...
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from regulator.errors import InputError

__all__ = [
    "BODY_MODELS",
    "MAX_ABS_VALUE",
    "MAX_ITEMS",
    "MAX_VALUES",
    "REPLY_WAIT_S",
    "Alert",
    "AlertmanagerPayload",
    "FeedbackItem",
    "FeedbackRequest",
    "Prediction",
    "RecalibrateRequest",
    "Rejection",
    "Sample",
    "SamplesRequest",
    "SamplesResponse",
    "X",
    "check_x",
]

MAX_ITEMS = 10_000
"""Most samples, labels or alerts in one request."""
MAX_VALUES = 1_000_000
"""Most numbers in one sample's ``x``."""
MAX_ABS_VALUE = 1e9
"""Largest magnitude of an input value or a regression target: inputs are float32 on
the chip, and values this large only come from a broken sensor or a hostile client."""
MAX_ABS_T = 1e12
"""Largest magnitude of a time stamp ``t`` (seconds)."""

_PRINTABLE = r"^[!-~]+$"
_ID = Annotated[str, Field(min_length=1, max_length=200, pattern=_PRINTABLE)]
_Value = Annotated[float, Field(ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]
_T = Annotated[float, Field(ge=-MAX_ABS_T, le=MAX_ABS_T)]
_ClassOrTarget = Annotated[int, Field(ge=0, le=1_000_000)] | _Value
X = list[list[_Value]] | list[_Value]
"""A sample's input: channels × time steps ``[C][L]``, or one value per channel ``[C]``."""

_X_EXAMPLE: list[Any] = [[0.12, 0.10], [0.55, 0.61], [1.02, 0.98]]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Sample(_Body):
    """One input sample pushed for inference (``source: http``). ``t`` in seconds: the
    time it is served at when the source's ``clock`` is ``sample``."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"sample_id": "s-0001", "x": _X_EXAMPLE, "t": 12.5}]}
    )

    sample_id: _ID | None = None
    x: X
    t: _T | None = None
    env: dict[str, Any] | None = None


class SamplesRequest(_Body):
    """``POST /v1/samples``: samples for the HTTP source. Each is validated on its own;
    the good ones are served, the bad ones come back with their index and reason."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"samples": [{"sample_id": "s-0001", "x": _X_EXAMPLE}]},
                {"samples": [{"sample_id": "s-0002", "x": _X_EXAMPLE}], "wait": False},
            ]
        }
    )

    # Checked one by one (``Sample``) so that one bad sample does not refuse the rest.
    samples: Annotated[
        list[Any],
        WithJsonSchema(
            {
                "type": "array",
                "items": Sample.model_json_schema(),
                "minItems": 1,
                "maxItems": MAX_ITEMS,
            }
        ),
    ] = Field(min_length=1, max_length=MAX_ITEMS)
    wait: bool = True
    """Answer once the samples are served, with their predictions (at most
    :data:`REPLY_WAIT_S`, and on ``source.clock: sample`` as long again as serving waits
    for a recalibration, up to its ``timeout_s``; those not served by then come back in
    ``pending``). False: answer once they are queued."""


REPLY_WAIT_S = 10.0
"""Longest a ``POST /v1/samples`` waits for its samples to be served (seconds)."""


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prediction(_Answer):
    """One served sample: the class index (or regression value) the served model
    predicted, its readout ``outputs`` (one per class or target), the sample's OOD
    p-value (None when the monitor did not score it) and the model ``version``."""

    sample_id: str
    prediction: int | float
    outputs: list[float]
    ood_p_value: float | None
    version: str


class Rejection(_Answer):
    """A sample or label refused: its ``index`` in the request, a
    :data:`~regulator.errors.RejectReason` and the detail."""

    index: int
    reason: str
    detail: Any = None


class SamplesResponse(_Answer):
    """``POST /v1/samples``' answer: the accepted samples' ``ids`` (in order), their
    ``predictions`` (in order, once served), the accepted ones still ``pending`` (not
    served within the wait, or all with ``wait`` false), the refused ones, and the phase
    of the recalibration state machine after they were served (``idle``, ``waiting``,
    ``queued``, ``running``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "accepted": 1,
                    "ids": ["s-0001"],
                    "rejected": [],
                    "predictions": [
                        {
                            "sample_id": "s-0001",
                            "prediction": 2,
                            "outputs": [0.1, 0.3, 2.2],
                            "ood_p_value": 0.41,
                            "version": "v0003",
                        }
                    ],
                    "pending": [],
                    "recalibration": "idle",
                }
            ]
        }
    )

    accepted: int
    ids: list[str]
    rejected: list[Rejection]
    predictions: list[Prediction]
    pending: list[str]
    recalibration: Literal["idle", "waiting", "queued", "running"]


class FeedbackItem(_Body):
    """A label for an earlier sample (``sample_id`` only), or a labelled calibration
    sample (with ``x``, shaped like the served model's input). ``y`` is a class index
    or a regression target."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"sample_id": "s-0001", "y": 2}, {"x": _X_EXAMPLE, "y": 0, "t": 30.0}]
        }
    )

    sample_id: _ID | None = None
    y: _ClassOrTarget
    x: X | None = None
    t: _T | None = None
    env: dict[str, Any] | None = None


class FeedbackRequest(_Body):
    """``POST /v1/feedback``: labels, stored durably before the answer."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [{"sample_id": "s-0001", "y": 2}]}]}
    )

    items: list[FeedbackItem] = Field(min_length=1, max_length=MAX_ITEMS)


class RecalibrateRequest(_Body):
    """``POST /v1/recalibrate``: an optional reason, kept in the event log."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "sensor replaced"}]})

    reason: str | None = Field(default=None, max_length=500)


class Alert(BaseModel):
    """One alert of Alertmanager's webhook (payload version 4)."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    status: Literal["firing", "resolved"]
    labels: dict[Annotated[str, Field(max_length=1024)], Annotated[str, Field(max_length=4096)]] = (
        Field(default_factory=dict, max_length=256)
    )
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str | None = None  # camelCase: Alertmanager's field names
    endsAt: str | None = None
    generatorURL: str | None = None
    fingerprint: str | None = Field(default=None, max_length=200, pattern=_PRINTABLE)

    def key(self) -> str:
        """The fingerprint, or a stable hash of the labels when there is none."""
        if self.fingerprint:
            return self.fingerprint
        canon = json.dumps(self.labels, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]


class AlertmanagerPayload(BaseModel):
    """Alertmanager's webhook body, version "4"; unknown keys are ignored (the schema
    is Alertmanager's)."""

    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "version": "4",
                    "status": "firing",
                    "receiver": "regulator",
                    "alerts": [
                        {
                            "status": "firing",
                            "labels": {"alertname": "RegulatorDrift", "recalibrate": "true"},
                            "fingerprint": "3f2a9c",
                        }
                    ],
                }
            ]
        },
    )

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupKey: str = ""
    truncatedAlerts: int = Field(default=0, ge=0)
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[Alert] = Field(max_length=MAX_ITEMS)


BODY_MODELS: tuple[type[BaseModel], ...] = (
    Sample,
    SamplesRequest,
    SamplesResponse,
    FeedbackRequest,
    RecalibrateRequest,
    AlertmanagerPayload,
)
"""The models whose schemas the OpenAPI document carries."""


def check_x(x: Any) -> tuple[int, ...]:
    """Shape of a sample input, after checking it is ``[C]`` or rectangular ``[C][L]``
    of finite real numbers within ±MAX_ABS_VALUE; InputError with the reason otherwise.

    >>> check_x([[0.0, 1.0], [2.0, 3.0]]), check_x([1, 2, 3])
    ((2, 2), (3,))
    >>> check_x([[1.0], [2.0, 3.0]])
    Traceback (most recent call last):
    ...
    regulator.errors.InputError: bad_shape: rows of x differ in length (1 and 2)
    """
    if not isinstance(x, list) or not x:
        raise InputError("bad_shape: x must be a non-empty list", "bad_shape")
    if all(isinstance(row, list) for row in x):
        width = len(x[0])
        if width == 0:
            raise InputError("bad_shape: rows of x must be non-empty", "bad_shape")
        if len(x) * width > MAX_VALUES:
            raise InputError(f"bad_shape: x has more than {MAX_VALUES} values", "bad_shape")
        for row in x:
            if len(row) != width:
                raise InputError(
                    f"bad_shape: rows of x differ in length ({width} and {len(row)})", "bad_shape"
                )
            _check_numbers(row)
        return (len(x), width)
    if any(isinstance(v, list) for v in x):
        raise InputError("bad_shape: x mixes numbers and lists", "bad_shape")
    if len(x) > MAX_VALUES:
        raise InputError(f"bad_shape: x has more than {MAX_VALUES} values", "bad_shape")
    _check_numbers(x)
    return (len(x),)


def _check_numbers(values: list[Any]) -> None:
    # The common case first, in C loops: all floats, all good? With every value finite
    # min and max are exact; a NaN or an infinity makes the sum non-finite, and finite
    # values within the bound cannot overflow it.
    if (
        set(map(type, values)) == {float}
        and math.isfinite(sum(values))
        and -MAX_ABS_VALUE <= min(values) <= max(values) <= MAX_ABS_VALUE
    ):
        return
    for v in values:  # the first bad value, in order, names the reason
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise InputError(f"bad_value: x holds a non-number {type(v).__name__}", "bad_value")
        if isinstance(v, float) and not math.isfinite(v):
            raise InputError("non_finite: x holds NaN or infinity", "non_finite")
        if not -MAX_ABS_VALUE <= v <= MAX_ABS_VALUE:
            raise InputError(
                f"out_of_range: x holds a value beyond ±{MAX_ABS_VALUE:g}", "out_of_range"
            )
