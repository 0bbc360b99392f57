"""All of regulator's exceptions, in one tree.

Each subclasses a built-in exception as well, so callers that do not know ours can
still catch what they expect::

    RegulatorError(Exception)
    ├── ConfigError(RegulatorError, ValueError)        invalid policy file, profile or argument
    │   └── UnknownNameError(ConfigError, KeyError)    a plug-in name that is not registered
    ├── InputError(RegulatorError, ValueError)         a sample or batch that cannot be served
    ├── DataFormatError(RegulatorError, ValueError)    a malformed data file (names file and line)
    ├── ModelFolderError(RegulatorError, OSError)      a model folder that is missing or corrupt
    │   └── ChecksumError(ModelFolderError)            a file whose sha256 does not match
    ├── AdaptationError(RegulatorError, RuntimeError)  few-shot adaptation could not run
    │   └── NotEnoughSamplesError(AdaptationError)     fewer labelled samples than asked for
    └── RegistryError(RegulatorError, RuntimeError)    the versioned model store refused a change
"""

from __future__ import annotations

from collections.abc import Iterable


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
    """A sample or batch has the wrong shape or non-finite values."""


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
