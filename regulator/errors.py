"""All of regulator's exceptions, in one tree.

Each subclasses a built-in exception as well, so callers that do not know ours can
still catch what they expect::

    RegulatorError(Exception)
    ├── ConfigError(RegulatorError, ValueError)        invalid policy file, profile or argument
    │   └── UnknownNameError(ConfigError, KeyError)    a plug-in name that is not registered
    ├── InputError(RegulatorError, ValueError)         a sample, label or body refused (``reason``)
    ├── DataFormatError(RegulatorError, ValueError)    a malformed data file (names file and line)
    ├── ModelFolderError(RegulatorError, OSError)      a model folder that is missing or corrupt
    │   └── ChecksumError(ModelFolderError)            a file whose sha256 does not match
    ├── AdaptationError(RegulatorError, RuntimeError)  few-shot adaptation could not run
    │   └── NotEnoughSamplesError(AdaptationError)     fewer labelled samples than asked for
    ├── RegistryError(RegulatorError, RuntimeError)    the versioned model store refused a change
    ├── StorageFullError(RegulatorError, OSError)      the state disk (or its reserve) is full
    └── ClientError(RegulatorError)                    raised by :mod:`regulator.client`
        ├── DaemonUnreachableError(ClientError, ConnectionError)  no answer (refused, timeout)
        └── ApiError(ClientError, RuntimeError)        an HTTP error answer (``status``, ``detail``)
            ├── AuthError(ApiError, PermissionError)   401, or 503 with no token configured
            ├── RequestRejectedError(ApiError, ValueError)  400, 413, 422: the body was refused
            └── ConflictError(ApiError)                409: the runtime refused the request

Every refusal of an input is counted under one vocabulary, :data:`RejectReason`: the
``reason`` label of ``regulator_samples_rejected_total`` and
``regulator_requests_rejected_total``, and the ``reason`` of the HTTP error bodies.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, get_args

RejectReason = Literal[
    "bad_shape",  # not [C] or [C][L], or not the served model's input shape
    "bad_value",  # a non-number (a string, a boolean) where a number belongs
    "non_finite",  # NaN or infinity
    "out_of_range",  # a finite number beyond the bound of its field
    "bad_label",  # a label that is not one of the served model's classes
    "unknown_sample",  # a label for a sample id that is no longer (or never was) kept
    "queue_full",  # the HTTP source's queue is full or closed
    "malformed_body",  # not JSON, or not the route's body schema
    "too_large",  # body over http.max_body_bytes
    "too_deep",  # JSON nested deeper than the limit
    "unauthorized",  # missing or wrong bearer token
    "no_token",  # no token configured: mutating routes are disabled
    "conflict",  # the runtime refused (nothing to roll back, wrong source kind)
    "disk_full",  # the state directory cannot store it now (retry later)
    "no_route",  # a path or method the HTTP contract does not list (404, 405)
]
"""Why an input was refused: one closed set for the runtime, the API and the metrics."""

REJECT_REASONS: tuple[str, ...] = get_args(RejectReason)


class RegulatorError(Exception):
    """Base of every error raised by regulator."""


class ConfigError(RegulatorError, ValueError):
    """A configuration value, file or argument is invalid."""


class UnknownNameError(ConfigError, KeyError):
    """A name that is not registered; the message lists the valid names."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.valid = sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class InputError(RegulatorError, ValueError):
    """A sample, label or request body was refused; ``reason`` says why, in the
    :data:`RejectReason` vocabulary."""

    def __init__(self, message: str, reason: RejectReason = "bad_shape") -> None:
        super().__init__(message)
        self.reason: RejectReason = reason


class DataFormatError(RegulatorError, ValueError):
    """A data file is malformed; the message names the file and the line."""


class ModelFolderError(RegulatorError, OSError):
    """A model folder is missing files or cannot be read."""


class ChecksumError(ModelFolderError):
    """A file in a model folder does not match the checksum in its manifest."""


class AdaptationError(RegulatorError, RuntimeError):
    """Few-shot adaptation could not run."""


class NotEnoughSamplesError(AdaptationError):
    """Fewer labelled samples than the adaptation asks for."""


class RegistryError(RegulatorError, RuntimeError):
    """The model registry refused a change (unknown version, nothing to roll back to)."""


class StorageFullError(RegulatorError, OSError):
    """The state directory cannot take a write now: the disk is full, or the write would
    eat into the configured reserve. Nothing was written; retry when space returns."""


class ClientError(RegulatorError):
    """Raised by :mod:`regulator.client` talking to a daemon."""


class DaemonUnreachableError(ClientError, ConnectionError):
    """The daemon did not answer: connection refused, reset, or timed out."""


class ApiError(ClientError, RuntimeError):
    """The daemon answered with an HTTP error; ``status`` and its ``detail`` body."""

    def __init__(self, message: str, status: int, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class AuthError(ApiError, PermissionError):
    """The bearer token is missing or wrong (401), or the daemon has none set (503)."""


class RequestRejectedError(ApiError, ValueError):
    """The request body was refused (400, 413 too large, 422 invalid)."""


class ConflictError(ApiError):
    """The runtime refused the request in its current state (409)."""
