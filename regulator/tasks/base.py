"""The task-family contract: environments, episodes, and the plug-in lookup.

A *task family* is a distribution over *environments* (physical conditions with units,
such as temperature or viscosity) and, for each environment, a distribution over
labelled samples. Samples are float32 arrays shaped ``[n, C, L]`` (C channels, L time
points; L = 1 for static feature vectors). Labels are int64 class ids for
classification, float32 ``[n]`` (or ``[n, D]``) for regression.

Every family is registered by name; :func:`make_family` builds one from its
:meth:`TaskFamily.config`, so a model folder can record which family it was trained on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from regulator.errors import ConfigError, InputError, UnknownNameError

if TYPE_CHECKING:
    from regulator.tasks.schedules import Schedule, Stream

__all__ = [
    "Environment",
    "Episode",
    "TaskFamily",
    "family_names",
    "interpolate",
    "make_family",
    "register_family",
]


class Environment(BaseModel):
    """One set of physical conditions; fully determines the sample distribution.

    ``params`` holds physical values whose units are in the names (``temperature_c``,
    ``ph``, ``viscosity_mpa_s``, ...). ``seed`` is the seed it was drawn from
    (``family.environment_from_seed(seed)`` rebuilds it), or -1 for one that was not
    drawn (the nominal environment, or a blend of two).

    >>> env = Environment(family="demo", params={"temperature_c": 25.0}, seed=3)
    >>> env.params["temperature_c"]
    25.0
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: str
    params: dict[str, float]
    seed: int


def interpolate(a: Environment, b: Environment, w: float) -> Environment:
    """The environment a fraction ``w`` (0 = ``a``, 1 = ``b``) of the way from a to b.

    Parameters are blended linearly; a gradual shift is a walk along this line.

    >>> a = Environment(family="f", params={"ph": 6.0}, seed=1)
    >>> b = Environment(family="f", params={"ph": 8.0}, seed=2)
    >>> interpolate(a, b, 0.25).params
    {'ph': 6.5}
    """
    if a.family != b.family or a.params.keys() != b.params.keys():
        raise ConfigError("can only interpolate environments of the same family and shape")
    if w <= 0.0:
        return a
    if w >= 1.0:
        return b
    params = {k: (1.0 - w) * v + w * b.params[k] for k, v in a.params.items()}
    return Environment(family=a.family, params=params, seed=-1)


@dataclass(frozen=True)
class Episode:
    """A few-shot task: a labelled support set to adapt on, a query set to score on.

    Arrays follow the module's shapes: ``support_x [n_s, C, L]``, ``support_y [n_s]``.
    """

    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray


class TaskFamily(ABC):
    """A distribution over environments and, within each, over labelled samples.

    Subclasses set ``name`` and ``kind`` and the instance attributes ``n_channels``,
    ``length`` and ``n_outputs`` (classes, or regression dimensions), and implement
    :meth:`environment_from_seed`, :meth:`nominal_environment`, :meth:`sample` and
    :meth:`config`.
    """

    name: ClassVar[str]
    kind: ClassVar[Literal["classification", "regression"]]
    n_channels: int
    length: int
    n_outputs: int

    def sample_environment(self, rng: np.random.Generator) -> Environment:
        """A random environment; reproducible from the seed it records."""
        seed = int(rng.integers(0, 2**31 - 1))
        return self.environment_from_seed(seed)

    @abstractmethod
    def environment_from_seed(self, seed: int) -> Environment:
        """The environment that ``seed`` draws (same seed, same environment)."""

    @abstractmethod
    def nominal_environment(self) -> Environment:
        """The undrifted environment: reference conditions, healthy sensors."""

    @abstractmethod
    def sample(
        self,
        env: Environment,
        n: int,
        rng: np.random.Generator,
        classes: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` labelled samples ``(x [n, C, L] float32, y)`` in ``env``.

        ``classes`` (classification only) fixes each sample's class, shape ``[n]``.
        """

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-able keyword arguments: ``make_family(self.name, **self.config())``."""

    def episode(
        self, env: Environment, k_shot: int, n_query: int, rng: np.random.Generator
    ) -> Episode:
        """An N-way K-shot episode in ``env``.

        Classification: ``k_shot`` support samples of every class, and ``n_query`` query
        samples drawn with balanced classes (as even as ``n_query`` allows). Regression:
        ``k_shot`` support and ``n_query`` query samples.
        """
        if k_shot < 1 or n_query < 1:
            raise ConfigError(f"k_shot and n_query must be >= 1, got {k_shot}, {n_query}")
        self._check_env(env)
        if self.kind == "regression":
            sx, sy = self.sample(env, k_shot, rng)
            qx, qy = self.sample(env, n_query, rng)
            return Episode(sx, sy, qx, qy)
        n_cls = self.n_outputs
        support_classes = np.repeat(np.arange(n_cls, dtype=np.int64), k_shot)
        query_classes = rng.permutation(np.arange(n_query, dtype=np.int64) % n_cls)
        sx, sy = self.sample(env, support_classes.size, rng, classes=support_classes)
        qx, qy = self.sample(env, n_query, rng, classes=query_classes)
        return Episode(sx, sy, qx, qy)

    def stream(
        self,
        schedule: Schedule,
        rng: np.random.Generator,
        n: int | None = None,
        start_nominal: bool = True,
    ) -> Stream:
        """An endless (or ``n``-long) stream whose environment follows ``schedule``."""
        from regulator.tasks.schedules import Stream

        return Stream(self, schedule, rng, n=n, start_nominal=start_nominal)

    def _check_env(self, env: Environment) -> None:
        if env.family != self.name:
            raise InputError(f"environment of family {env.family!r} given to {self.name!r}")

    def _check_classes(
        self, n: int, classes: np.ndarray | None, rng: np.random.Generator
    ) -> np.ndarray:
        """``classes`` validated, or ``n`` uniformly drawn class ids."""
        if classes is None:
            return rng.integers(0, self.n_outputs, size=n).astype(np.int64)
        out = np.asarray(classes, dtype=np.int64).reshape(-1)
        if out.size != n:
            raise InputError(f"classes has {out.size} entries for n={n}")
        if out.size and (out.min() < 0 or out.max() >= self.n_outputs):
            raise InputError(f"class ids must lie in [0, {self.n_outputs})")
        return out


_F = TypeVar("_F", bound=type[TaskFamily])
_REGISTRY: dict[str, Callable[..., TaskFamily]] = {}


def register_family(cls: _F) -> _F:
    """Class decorator: make ``cls`` buildable by ``make_family(cls.name, ...)``."""
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtins() -> None:
    # Imported for their registration side effect; lazily, to avoid an import cycle.
    import regulator.tasks.file_family
    import regulator.tasks.nanosensor
    import regulator.tasks.navigation  # noqa: F401


def family_names() -> list[str]:
    """Registered family names, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def make_family(name: str, **config: Any) -> TaskFamily:
    """Build the family registered as ``name`` with keyword ``config``.

    >>> make_family("nanosensor").n_channels
    8
    >>> make_family("nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    regulator.errors.UnknownNameError: unknown task family 'nope'; valid: file, nanosensor, ...
    """
    _load_builtins()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise UnknownNameError("task family", name, _REGISTRY) from None
    try:
        return factory(**config)
    except TypeError as exc:
        raise ConfigError(f"bad configuration for task family {name!r}: {exc}") from exc


def check_params(params: Mapping[str, float], required: list[str]) -> None:
    """Raise InputError unless every name in ``required`` is present."""
    missing = [k for k in required if k not in params]
    if missing:
        raise InputError(f"environment lacks parameters: {', '.join(missing)}")
