"""Recorded netlink replies (hex datagrams in JSON fixtures) split into their messages."""

from __future__ import annotations

import json
from pathlib import Path

from lifeline_agent.netlink.attributes import NLMSG_HEADER, align, split_messages


def recorded_messages(path: Path, key: str) -> list[tuple[int, bytes, memoryview]]:
    """(type, the message with its header, payload) of each message recorded under ``key``."""
    out = []
    for datagram in json.loads(path.read_text())[key]:
        data = bytes.fromhex(datagram)
        offset = 0
        for kind, _flags, _seq, payload in split_messages(data):
            length = NLMSG_HEADER.size + len(payload)
            out.append((kind, data[offset : offset + length], payload))
            offset += align(length)
    return out
