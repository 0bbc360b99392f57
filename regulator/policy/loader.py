"""Reading a policy file into a :class:`~regulator.policy.model.Policy`, safely.

Whatever the file holds, the outcome is a Policy or a :class:`ConfigError` naming the
reason (and, for content, every field path): never a traceback and never a hang. So
the loader refuses, before or while parsing:

- anything but a regular file (a FIFO would block the read, ``/dev/zero`` never ends);
- files over :data:`MAX_POLICY_BYTES`;
- nesting deeper than :data:`MAX_DEPTH` (PyYAML's composer and tomllib recurse);
- YAML whose aliases expand past :data:`MAX_NODES` nodes ("billion laughs");
- mapping keys that are given twice or cannot be keys (a list as a key);
- scalars Python cannot build (``2026-13-01`` as a date, integers of 5,000 digits).

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "p.yaml").write_text("http: {port: 9000}\\n")
>>> load_policy(d / "p.yaml").http.port
9000
>>> _ = (d / "deep.yaml").write_text("a: " + "[" * 100 + "]" * 100 + "\\n")
>>> load_policy(d / "deep.yaml")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
regulator.errors.ConfigError: ...deep.yaml: YAML error at line 1, ...: nesting deeper than 64 levels
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

import yaml

from regulator.errors import ConfigError
from regulator.policy.model import Policy, parse_policy

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_POLICY_BYTES",
    "load_policy",
    "read_policy_data",
    "read_policy_text",
]

MAX_POLICY_BYTES = 1 << 20
"""Largest policy file read (bytes); the commented default is about 10 KB."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists; a policy needs five."""
MAX_NODES = 100_000
"""Most YAML nodes after alias expansion."""


class _SafeLoader(yaml.SafeLoader):
    """A safe loader with limits on nesting and alias expansion, that refuses duplicate
    and unhashable keys (YAML keeps the last duplicate silently, hiding typos)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> nodes after expansion

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)
            if node is not None and id(node) not in self._sizes:
                raise yaml.composer.ComposerError(
                    None, None, "found a recursive alias", event.start_mark
                )
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, f"nesting deeper than {MAX_DEPTH} levels", mark
            )
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None:
            self._sizes[id(node)] = size = 1 + sum(self._sizes.get(id(c), 1) for c in _kids(node))
            if size > MAX_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_NODES} nodes after expanding aliases",
                    node.start_mark,
                )  # fmt: skip
        return node


def _kids(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden
            continue
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found a {type(key).__name__} as a key (keys must be names)",
                key_node.start_mark,
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node)


_SafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_policy_text(path: Path) -> str:
    """The file's text, if it is a regular file of at most :data:`MAX_POLICY_BYTES`
    in UTF-8; ConfigError otherwise. Never blocks on a FIFO or reads a device."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read policy file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{path}: not a regular file ({_kind(st.st_mode)})")
    if st.st_size > MAX_POLICY_BYTES:
        raise ConfigError(
            f"{path}: {st.st_size} bytes; a policy file is at most {MAX_POLICY_BYTES}"
        )
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO since the stat, open returns at once.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read policy file: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ConfigError(f"{path}: not a regular file")
        data = f.read(MAX_POLICY_BYTES + 1)
    if len(data) > MAX_POLICY_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_POLICY_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a file"


def _parse_yaml(path: Path, text: str) -> Any:
    try:
        return yaml.load(text, Loader=_SafeLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        ctx = exc.context_mark
        if exc.context and ctx is not None and ctx is not mark:
            problem += f" ({exc.context} at line {ctx.line + 1}, column {ctx.column + 1})"
        raise ConfigError(f"{path}: YAML error{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {exc}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a scalar Python cannot build
        raise ConfigError(f"{path}: YAML value error: {exc}") from None


def _check_depth(path: Path, data: Any) -> None:
    """Refuse parsed data nested deeper than MAX_DEPTH (iteratively: no recursion)."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        obj, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(f"{path}: nesting deeper than {MAX_DEPTH} levels")
        if isinstance(obj, dict):
            stack.extend((v, depth + 1) for v in obj.values())
        elif isinstance(obj, list | tuple):
            stack.extend((v, depth + 1) for v in obj)


def load_policy(path: Path | str | None) -> Policy:
    """Read and validate a policy file; None gives the embedded default.

    A ``.toml`` suffix is read as TOML, anything else as YAML. Raises ConfigError for an
    unreadable or oversized file, a non-regular file, a syntax error (with its line) or
    invalid content (every error, each with its dotted field path)."""
    if path is None:
        return Policy()
    path = Path(path)
    return parse_policy(read_policy_data(path), origin=str(path))


def read_policy_data(path: Path) -> Any:
    """The file parsed (TOML for a ``.toml`` suffix, else YAML) within the same limits
    as :func:`load_policy`, not yet validated; ConfigError otherwise. A fleet file
    (:mod:`regulator.fleet.config`) is read with it too."""
    text = read_policy_text(path)
    data: Any
    try:
        if path.suffix.lower() == ".toml":
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
        else:
            data = _parse_yaml(path, text)
    except RecursionError:  # tomllib recurses on nested inline tables and arrays
        raise ConfigError(f"{path}: nesting too deep") from None
    _check_depth(path, data)
    return data
