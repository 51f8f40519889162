"""Walking pyroute2 replies once they are plain data (``msg.dump()``: ``{"attrs": [[name, value], …]}``).

Parsers take these plain dicts so they are testable with recorded replies; ``Any`` stays here and in
the adapters that call pyroute2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def attr(msg: Mapping[str, Any] | None, name: str) -> Any:
    """The value of the first attribute ``name`` in a dumped netlink message, or None."""
    if not isinstance(msg, Mapping):
        return None
    for pair in msg.get("attrs", ()):
        if len(pair) >= 2 and pair[0] == name:
            return pair[1]
    return None


def attrs(msg: Mapping[str, Any] | None, name: str) -> list[Any]:
    """Every value of attribute ``name`` (nested lists such as WireGuard peers repeat)."""
    if not isinstance(msg, Mapping):
        return []
    return [pair[1] for pair in msg.get("attrs", ()) if len(pair) >= 2 and pair[0] == name]


def as_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value
