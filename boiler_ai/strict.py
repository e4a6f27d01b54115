"""Strict YAML loading shared by every file a plant engineer edits.

A malformed file must fail loudly with the file and the field path named, never half-load:
unknown keys are typos until proven otherwise, and a missing limit is not a default of zero.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from boiler_ai.errors import ExpectedError


class ConfigError(ExpectedError, ValueError):
    """A configuration or data file is wrong. The message names the file and the field."""

    def __init__(self, source: str | Path, field: str, message: str):
        self.source = str(source)
        self.field = field
        super().__init__(f"{source}: {field}: {message}" if field else f"{source}: {message}")


def load_yaml(path: str | Path) -> dict:
    """The one reader of every YAML file boiler-ai takes (daemon configs, tag maps, envelopes, test
    sheets; the guard's own reading of the envelope too). A key given twice in one mapping is an
    error naming both lines: YAML would keep the second silently, even when it is the looser limit."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read file ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "", f"not UTF-8 text (byte {exc.start})") from None
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _refuse_duplicate_keys(path, loader, node, "", set())
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(path, "", f"not valid YAML: {where}{problem}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(path, "", "expected a mapping at the top level")
    return data


_MERGE = "tag:yaml.org,2002:merge"
# libyaml's parser when PyYAML has it (ten times faster: an evaluation worker reads the config, tag map and
# envelope several times per run); the same resolver and constructor, so the same data.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _refuse_duplicate_keys(path: Path, loader: yaml.SafeLoader, node: yaml.Node, where: str, seen: set[int]) -> None:
    if id(node) in seen:  # an alias: its anchor was checked already
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicate_keys(path, loader, item, f"{where}[{i}]", seen)
    elif isinstance(node, yaml.MappingNode):
        first_seen: dict = {}  # key -> where it first appears
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE or not isinstance(key_node, yaml.ScalarNode):
                continue  # merged keys may be overridden by design; other keys PyYAML refuses itself
            key = loader.construct_object(key_node)
            label = f"{where}.{key}" if where else str(key)
            mark = key_node.start_mark
            first = first_seen.setdefault(key, mark)
            if first is not mark:
                at, was = f"line {mark.line + 1}", f"line {first.line + 1}"
                if first.line == mark.line:
                    at, was = f"{at}, column {mark.column + 1}", f"{was}, column {first.column + 1}"
                raise ConfigError(path, label, f"duplicate key {key!r} at {at} (first at {was}): "
                                               "YAML would silently keep the second; remove one")
            _refuse_duplicate_keys(path, loader, value_node, label, seen)


class Fields:
    """Typed, strict access to one mapping of a file: every key must be consumed or known.

    Usage: f = Fields(src, "signals.o2", mapping); x = f.number("range"); ...; f.done()
    """

    def __init__(self, source: str | Path, path: str, data: Any):
        if not isinstance(data, dict):
            raise ConfigError(source, path, f"expected a mapping, got {type(data).__name__}")
        self.source, self.path, self.data = source, path, data
        self._seen: set[str] = set()

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.source, self._at(key), message)

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = ...) -> Any:
        self._seen.add(key)
        if key not in self.data:
            if default is ...:
                raise self.error(key, "required field is missing")
            return default
        return self.data[key]

    def number(self, key: str, default: Any = ..., *, lo: float | None = None, hi: float | None = None) -> float:
        value = self.raw(key, default)
        if value is default and default is not ...:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(key, f"expected a finite number, got {value!r}")
        if lo is not None and value < lo:
            raise self.error(key, f"must be >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise self.error(key, f"must be <= {hi}, got {value}")
        return float(value)

    def integer(self, key: str, default: Any = ..., *, lo: int | None = None) -> int:
        value = self.raw(key, default)
        if value is default and default is not ...:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {value!r}")
        if lo is not None and value < lo:
            raise self.error(key, f"must be >= {lo}, got {value}")
        return value

    def boolean(self, key: str, default: Any = ...) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def string(self, key: str, default: Any = ..., *, choices: tuple[str, ...] | None = None) -> str:
        value = self.raw(key, default)
        if value is default and default is not ...:
            return value
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def pair(self, key: str, default: Any = ...) -> tuple[float, float]:
        value = self.raw(key, default)
        if value is default and default is not ...:
            return value
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value)):
            raise self.error(key, f"expected [lo, hi] with two finite numbers, got {value!r}")
        lo, hi = float(value[0]), float(value[1])
        if lo > hi:
            raise self.error(key, f"lo {lo} is above hi {hi}")
        return lo, hi

    def address(self, key: str, parse, default: Any = ...):
        """A network address checked by `parse` (boiler_ai.addresses): a malformed
        one fails here, naming the field, rather than in a retry loop at run time."""
        value = self.string(key, default)
        if value is default and default is not ...:
            return value
        try:
            return parse(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def mapping(self, key: str, default: Any = ...) -> Fields:
        value = self.raw(key, default)
        return Fields(self.source, self._at(key), value)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self._seen)
        if unknown:
            raise self.error(unknown[0], f"unknown field (known here: {', '.join(sorted(self._seen)) or 'none'})")
