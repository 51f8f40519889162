"""The tiny DNS client: wire format both ways, and a real exchange with a loopback server."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lifeline_agent.errors import SourceParseError, SourceReadError
from lifeline_agent.sources.dnsquery import (
    DnsAnswer,
    build_query,
    parse_response,
    query,
    system_nameserver,
)


def test_query_wire_format() -> None:
    data = build_query("cad.agency.local", 0x1234)
    assert data[:12] == struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    assert data[12:] == b"\x03cad\x06agency\x05local\x00" + struct.pack("!HH", 1, 1)
    with pytest.raises(ValueError, match="not a DNS name"):
        build_query(".", 1)


def test_response_with_cname_and_compression() -> None:
    # Recorded answer from a BIND resolver: cad.agency.local CNAME cad01.agency.local, then its A.
    question = b"\x03cad\x06agency\x05local\x00\x00\x01\x00\x01"
    cname = b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 300, 8) + b"\x05cad01\xc0\x10"
    a_record = b"\xc0\x2e" + struct.pack("!HHIH", 1, 1, 300, 4) + bytes([10, 20, 0, 10])
    data = struct.pack("!HHHHHH", 7, 0x8180, 1, 2, 0, 0) + question + cname + a_record
    assert parse_response(data, 7) == DnsAnswer("NOERROR", ("10.20.0.10",))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x07\x81", "shorter than a header"),
        (struct.pack("!HHHHHH", 8, 0x8180, 0, 0, 0, 0), "does not match"),
        (struct.pack("!HHHHHH", 7, 0x0100, 0, 0, 0, 0), "not a response"),
        (struct.pack("!HHHHHH", 7, 0x8180, 0, 1, 0, 0) + b"\xc0\x0c\x00\x01", "truncated"),
    ],
)
def test_malformed_responses(data: bytes, message: str) -> None:
    with pytest.raises(SourceParseError, match=message):
        parse_response(data, 7)


def test_real_exchange_with_a_loopback_server(dns_server: Callable[[dict[str, list[str]]], Any]) -> None:
    server = dns_server({"cad.agency.local": ["10.20.0.10", "10.20.0.11"]})
    host, port = server.address.split(":")
    assert query("cad.agency.local", host, port=int(port)) == DnsAnswer(
        "NOERROR", ("10.20.0.10", "10.20.0.11")
    )
    assert query("nope.agency.local", host, port=int(port)) == DnsAnswer("NXDOMAIN", ())
    assert server.queries == ["cad.agency.local", "nope.agency.local"]


def test_silent_server_is_a_read_error(dns_server: Callable[[dict[str, list[str]]], Any]) -> None:
    server = dns_server({})
    server.close()  # bound port, nobody answering
    host, port = server.address.split(":")
    with pytest.raises(SourceReadError, match=r"DNS server 127\.0\.0\.1"):
        query("cad.agency.local", host, port=int(port), timeout=0.2)


def test_system_nameserver(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# generated\nsearch agency.local\nnameserver 127.0.0.53\nnameserver 10.0.0.2\n")
    assert system_nameserver(str(conf)) == "127.0.0.53"
    assert system_nameserver(str(tmp_path / "none")) == ""
