"""Walking netlink replies once they are plain data (``msg.dump()``: ``{"attrs": [[name, value], …]}``).

Parsers take these plain dicts so they are testable with recorded replies; ``Any`` stays here and in
the adapters that call pyroute2. The second half splits raw netlink datagrams with ``struct`` for
the hot polling paths (see ``rtnetlink``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
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


# --- raw rtnetlink, for the few attributes the agent reads ------------------------------------------
#
# pyroute2 decodes every attribute of every message into Python objects; a link dump costs
# milliseconds even on a machine with four links. The polling sources read a handful of fixed-size
# attributes, so they walk the bytes with ``struct`` instead and build the same ``msg.dump()``-shaped
# dicts the parsers above and in ``rtnetlink`` already take.

NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
NLA_HEADER = struct.Struct("=HH")  # length, type
NLMSG_ERROR_CODE = struct.Struct("=i")
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP_INTR = 0x10  # the table changed while it was dumped
NLM_F_DUMP = 0x300
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
U32 = struct.Struct("=I")
U64 = struct.Struct("=Q")


def align(length: int) -> int:
    return (length + 3) & ~3


def pack_message(kind: int, flags: int, seq: int, payload: bytes) -> bytes:
    return NLMSG_HEADER.pack(NLMSG_HEADER.size + len(payload), kind, flags, seq, 0) + payload


def pack_attr(kind: int, value: bytes) -> bytes:
    length = NLA_HEADER.size + len(value)
    return NLA_HEADER.pack(length, kind) + value + b"\0" * (align(length) - length)


def split_messages(data: bytes) -> Iterator[tuple[int, int, int, memoryview]]:
    """(type, flags, sequence, payload) of each netlink message in one datagram."""
    view = memoryview(data)
    offset = 0
    while offset + NLMSG_HEADER.size <= len(view):
        length, kind, flags, seq, _port = NLMSG_HEADER.unpack_from(view, offset)
        if length < NLMSG_HEADER.size or offset + length > len(view):
            raise ValueError(f"truncated netlink message at byte {offset} (length {length})")
        yield kind, flags, seq, view[offset + NLMSG_HEADER.size : offset + length]
        offset += align(length)


def split_attrs(data: memoryview, offset: int = 0) -> dict[int, memoryview]:
    """Attribute type → value from ``offset`` to the end (the first of a repeated type wins)."""
    out: dict[int, memoryview] = {}
    end = len(data)
    while offset + NLA_HEADER.size <= end:
        length, kind = NLA_HEADER.unpack_from(data, offset)
        if length < NLA_HEADER.size or offset + length > end:
            break  # a malformed tail: keep what was whole
        out.setdefault(kind & NLA_TYPE_MASK, data[offset + NLA_HEADER.size : offset + length])
        offset += align(length)
    return out


def error_code(payload: memoryview) -> int:
    """The errno of an NLMSG_ERROR (0 is an acknowledgement)."""
    return -int(NLMSG_ERROR_CODE.unpack_from(payload)[0])


def nla_text(value: memoryview) -> str:
    return bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace")


def nla_u8(value: memoryview) -> int:
    return int(value[0]) if len(value) >= 1 else 0


def nla_u32(value: memoryview) -> int | None:
    return int(U32.unpack_from(value)[0]) if len(value) >= U32.size else None


def nla_u64_at(value: memoryview, index: int) -> int | None:
    """The ``index``-th 64-bit field of a struct such as ``rtnl_link_stats64``."""
    start = index * U64.size
    return int(U64.unpack_from(value, start)[0]) if len(value) >= start + U64.size else None
