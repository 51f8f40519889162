"""Helpers both programs use to turn a TOML table into frozen dataclasses.

A ``Section`` reads one table, records every problem with its dotted key path instead of stopping
at the first, and rejects keys nobody read, so a typo such as ``intervall`` is an error rather than
a silently ignored setting.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}


class ConfigError(ValueError):
    """Every problem found in one config file. ``problems`` holds ``(path, reason)`` pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {path}: {reason}" for path, reason in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


def parse_duration(value: object) -> float:
    """``"1s"``, ``"250ms"``, ``"5m"``, ``"7d"`` or a bare number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError(f'must be a duration such as "1s" or "250ms" (got {value!r})')
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError(f'must be a duration such as "1s" or "250ms" (got {value!r})')


def parse_size(value: object) -> int:
    """``"100MB"``, ``"64MiB"`` or a bare number of bytes → bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    raise ValueError(f'must be a size such as "100MB" or "64MiB" (got {value!r})')


@dataclass
class Problems:
    """Collects problems across sections of one file."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str, reason: str) -> None:
        self.items.append((path, reason))


class Section:
    """One TOML table being read; ``path`` is its dotted location (``targets[2]``)."""

    def __init__(self, data: object, path: str, problems: Problems) -> None:
        self.path = path
        self.problems = problems
        if data is None:
            data = {}
        if not isinstance(data, dict):
            problems.add(path or "(top level)", f"must be a table (got {type(data).__name__})")
            data = {}
        self.data: dict[str, Any] = data
        self._read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, reason: str) -> None:
        self.problems.add(self.key(name), reason)

    def has(self, name: str) -> bool:
        return name in self.data

    def _get(self, name: str, default: T, kinds: tuple[type, ...], what: str) -> T:
        self._read.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        if isinstance(value, bool) and bool not in kinds:
            self.error(name, f"must be {what} (got {value!r})")
            return default
        if not isinstance(value, kinds):
            self.error(name, f"must be {what} (got {value!r})")
            return default
        return value  # type: ignore[return-value]

    def text(
        self, name: str, default: str = "", *, required: bool = False, pattern: str | None = None
    ) -> str:
        if required and name not in self.data:
            self.error(name, "is required")
        value = self._get(name, default, (str,), "a string")
        if pattern and name in self.data and isinstance(value, str) and not re.fullmatch(pattern, value):
            self.error(name, f"must match {pattern} (got {value!r})")
        return value

    def flag(self, name: str, default: bool) -> bool:
        return self._get(name, default, (bool,), "true or false")

    def integer(self, name: str, default: int, *, min: int | None = None, max: int | None = None) -> int:
        value = self._get(name, default, (int,), "an integer")
        if name in self.data and isinstance(value, int):
            if min is not None and value < min:
                self.error(name, f"must be ≥ {min} (got {value})")
            if max is not None and value > max:
                self.error(name, f"must be ≤ {max} (got {value})")
        return value

    def number(
        self, name: str, default: float, *, min: float | None = None, max: float | None = None
    ) -> float:
        value = self._get(name, default, (int, float), "a number")
        if name in self.data and isinstance(value, int | float):
            if min is not None and value < min:
                self.error(name, f"must be ≥ {min} (got {value})")
            if max is not None and value > max:
                self.error(name, f"must be ≤ {max} (got {value})")
        return float(value)

    def choice(self, name: str, default: str, choices: tuple[str, ...] | list[str]) -> str:
        value = self._get(name, default, (str,), "a string")
        if name in self.data and value not in choices:
            self.error(name, f"must be one of {', '.join(choices)} (got {value!r})")
            return default
        return value

    def duration(
        self,
        name: str,
        default: float,
        *,
        min: float | None = None,
        max: float | None = None,
    ) -> float:
        self._read.add(name)
        if name not in self.data:
            return default
        raw = self.data[name]
        try:
            value = parse_duration(raw)
        except ValueError as exc:
            self.error(name, str(exc))
            return default
        if min is not None and value < min:
            self.error(name, f"must be ≥ {_fmt_seconds(min)} (got {raw!r})")
        if max is not None and value > max:
            self.error(name, f"must be ≤ {_fmt_seconds(max)} (got {raw!r})")
        return value

    def size(self, name: str, default: int, *, min: int | None = None) -> int:
        self._read.add(name)
        if name not in self.data:
            return default
        try:
            value = parse_size(self.data[name])
        except ValueError as exc:
            self.error(name, str(exc))
            return default
        if min is not None and value < min:
            self.error(name, f"must be ≥ {min} bytes (got {self.data[name]!r})")
        return value

    def str_list(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self._get(name, list(default), (list,), "a list of strings")
        out: list[str] = []
        for index, item in enumerate(value):
            if not isinstance(item, str):
                self.problems.add(f"{self.key(name)}[{index}]", f"must be a string (got {item!r})")
            else:
                out.append(item)
        return tuple(out)

    def str_map(self, name: str) -> dict[str, str]:
        value: dict[str, object] = self._get(name, {}, (dict,), "a table of strings")
        out: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(item, str):
                self.problems.add(f"{self.key(name)}.{key}", f"must be a string (got {item!r})")
            else:
                out[key] = item
        return out

    def table(self, name: str) -> Section:
        self._read.add(name)
        return Section(self.data.get(name), self.key(name), self.problems)

    def tables(self, name: str) -> Iterator[Section]:
        """An array of tables (``[[targets]]``), each with its index in the path."""
        self._read.add(name)
        value = self.data.get(name, [])
        if not isinstance(value, list):
            self.error(name, "must be an array of tables ([[...]])")
            return
        for index, item in enumerate(value):
            yield Section(item, f"{self.key(name)}[{index}]", self.problems)

    def touch(self, *names: str) -> None:
        """Mark keys as read by someone else (a plugin's own config class)."""
        self._read.update(names)

    def finish(self) -> None:
        """Report keys that nobody read: almost always a typo."""
        for name in self.data:
            if name not in self._read:
                self.error(name, "unknown key")


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a syntax error becomes a ConfigError naming the line."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(source, [("(file)", "not found")]) from None
    except PermissionError:
        raise ConfigError(source, [("(file)", "permission denied")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [("(syntax)", str(exc))]) from None


def build(source: str, data: dict[str, Any], reader: Callable[[Section], T]) -> T:
    """Run ``reader`` over the top-level table and raise one ConfigError listing every problem."""
    problems = Problems()
    root = Section(data, "", problems)
    result = reader(root)
    root.finish()
    if problems.items:
        raise ConfigError(source, problems.items)
    return result
