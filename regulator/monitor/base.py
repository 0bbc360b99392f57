"""The one shape every monitor has (STYLE.md item 3), and lookup of plug-ins by name.

A monitor takes its configuration in the constructor (validated there, so a bad value
fails early with a :class:`~regulator.errors.ConfigError` naming the valid values),
consumes observations with ``update(...)``, exposes read-only results as properties,
and can be ``reset()``, saved with ``state_dict()`` (plain JSON types only) and restored
with ``load_state_dict()`` so that the restored monitor gives the same outputs as the
original on the same later inputs.

Monitors are pure computation: numpy only, no threads, no I/O, no metrics library.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from regulator.errors import ConfigError, UnknownNameError

T = TypeVar("T")


class Monitor(ABC):
    """Abstract base of every monitor."""

    #: short, stable name of the monitor kind (used in ``state_dict`` and status JSON)
    kind: str = "monitor"

    @abstractmethod
    def update(self, *args: Any, **kwargs: Any) -> None:
        """Consume one observation (or a batch of them)."""

    @abstractmethod
    def reset(self) -> None:
        """Forget every observation; keep the configuration."""

    @property
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments (JSON types): ``type(m)(**m.config)`` is a twin."""

    @abstractmethod
    def summary(self) -> dict[str, Any]:
        """All current results as plain JSON types (for status pages and tests)."""

    @abstractmethod
    def _get_state(self) -> dict[str, Any]:
        """The mutable state as plain JSON types."""

    @abstractmethod
    def _set_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`_get_state`."""

    def state_dict(self) -> dict[str, Any]:
        """The monitor's state as JSON types; the configuration is included for checking."""
        return {"kind": self.kind, "config": self.config, "state": self._get_state()}

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        """Restore a state saved by :meth:`state_dict` of a monitor with the same config."""
        if d.get("kind") != self.kind:
            raise ConfigError(f"state is for monitor {d.get('kind')!r}, not {self.kind!r}")
        if _jsonish(d.get("config")) != _jsonish(self.config):
            raise ConfigError(
                f"state was saved by a {self.kind} monitor with another configuration"
            )
        self._set_state(d["state"])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items() if not isinstance(v, dict))
        return f"{type(self).__name__}({args})"


def _jsonish(x: Any) -> Any:
    """Normalise tuples to lists so configs compare equal after a JSON round trip."""
    if isinstance(x, Mapping):
        return {str(k): _jsonish(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonish(v) for v in x]
    return x


def make_plugin(kind: str, registry: Mapping[str, Callable[..., T]], name: str, **cfg: Any) -> T:
    """Instantiate the plug-in ``name`` from ``registry``; unknown names list the valid ones."""
    try:
        factory = registry[name]
    except KeyError:
        raise UnknownNameError(kind, name, registry.keys()) from None
    try:
        return factory(**cfg)
    except TypeError as exc:  # unexpected keyword: a configuration error, not a crash
        raise ConfigError(f"bad configuration for {kind} {name!r}: {exc}") from exc


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1, or a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in the given range, or a ConfigError naming the range."""
    lo_b = "(" if low_open else "["
    hi_b = ")" if high_open else "]"
    rng = f"{lo_b}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi_b}"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number in {rng}, got {value!r}") from None
    ok = v == v and abs(v) != float("inf")
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if isinstance(value, bool) or not ok:
        raise ConfigError(f"{name} must be a number in {rng}, got {value!r}")
    return v


def check_choice(name: str, value: Any, valid: tuple[str, ...]) -> str:
    """``value`` if it is one of ``valid``, else a ConfigError listing them."""
    if value not in valid:
        raise ConfigError(f"{name} must be one of {', '.join(valid)}; got {value!r}")
    return str(value)
