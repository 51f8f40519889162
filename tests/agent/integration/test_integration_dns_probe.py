"""The DNS probe: its parser over recorded replies, and the probe against a real UDP responder."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from lifeline_agent.config import Target
from lifeline_agent.probes.dns import DnsParseError, build_query, judge, parse_reply, read_name
from lifeline_agent.probes.runner import ProbeRunner
from lifeline_agent.recorder import Recorder

# A resolver's reply to "cad.agency.internal A" (id 0x1a2b): a CNAME to cad1.agency.internal, then
# its A record 10.20.0.10; names after the question are compression pointers (as dig shows them).
RECORDED_CNAME = bytes.fromhex(
    "1a2b81800001000200000000"  # header: id, QR RD RA, 1 question, 2 answers
    "03636164066167656e637908696e7465726e616c0000010001"  # cad.agency.internal A IN
    "c00c000500010000012c00070463616431c010"  # CNAME → cad1 + pointer to agency.internal
    "c031000100010000012c00040a14000a"  # cad1.agency.internal A 10.20.0.10
)
# NXDOMAIN for nosuch.agency.internal (id 0xbeef) with no answers.
RECORDED_NXDOMAIN = bytes.fromhex(
    "beef81830001000000000000066e6f73756368066167656e637908696e7465726e616c0000010001"
)


def test_parser_reads_a_recorded_reply_with_compression_and_a_cname() -> None:
    reply = parse_reply(RECORDED_CNAME)
    assert (reply.qid, reply.rcode, reply.truncated) == (0x1A2B, 0, False)
    assert reply.question == "cad.agency.internal"
    assert reply.addresses == ("10.20.0.10",)
    assert judge(reply, "10.20.0.10") == ("", "answer ['10.20.0.10']")
    assert judge(reply, "10.20.0.11")[0] == "mismatch"


def test_parser_reads_nxdomain_and_rejects_garbage() -> None:
    reply = parse_reply(RECORDED_NXDOMAIN)
    assert (reply.qid, reply.rcode, reply.addresses) == (0xBEEF, 3, ())
    assert reply.question == "nosuch.agency.internal"
    assert judge(reply, "")[0] == "nxdomain"
    with pytest.raises(DnsParseError, match="shorter"):
        parse_reply(b"\x12\x34")
    with pytest.raises(DnsParseError, match="QR"):
        parse_reply(build_query("cad.agency.internal", 7))  # a query, not a reply
    with pytest.raises(DnsParseError):
        parse_reply(RECORDED_CNAME[:-3])  # the last record cut short
    loop = b"\x00" * 12 + b"\xc0\x0c"  # a pointer to itself
    with pytest.raises(DnsParseError, match="loop"):
        read_name(loop, 12)


def test_query_round_trips_through_the_parser_header() -> None:
    query = build_query("CAD.Agency.Internal.", 0x0102)
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", query[:12])
    assert (qid, flags, qd, an, ns, ar) == (0x0102, 0x0100, 1, 0, 0, 0)
    assert read_name(query, 12) == ("cad.agency.internal", len(query) - 4)
    with pytest.raises(ValueError, match="not a DNS name"):
        build_query(".", 1)


def _answer(query: bytes, rcode: int, addresses: list[str]) -> bytes:
    qid = struct.unpack("!H", query[:2])[0]
    question = query[12:]
    header = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(addresses), 0, 0)
    records = b"".join(
        b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(a) for a in addresses
    )
    return header + question + records


class Responder:
    """A tiny authoritative responder on loopback: each name has a scripted behaviour."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                query, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            name = read_name(query, 12)[0]
            if name == "slow.agency.internal":
                continue  # never answers
            if name == "wrongid.agency.internal":
                self.sock.sendto(b"\x00\x00" + _answer(query, 0, ["10.0.0.1"])[2:], peer)
                continue
            rcode, addresses = {
                "cad.agency.internal": (0, ["10.20.0.10", "10.20.0.11"]),
                "fail.agency.internal": (2, []),
                "refuse.agency.internal": (5, []),
                "empty.agency.internal": (0, []),
            }.get(name, (3, []))
            self.sock.sendto(_answer(query, rcode, addresses), peer)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def responder() -> Iterator[Responder]:
    server = Responder()
    yield server
    server.close()


def probe(port: int, query: str, expect: str = "") -> tuple[bool, str, int]:
    target = Target(
        name="agency-dns",
        role="dns",
        kind="dns",
        host="127.0.0.1",
        port=port,
        query=query,
        expect=expect,
        timeout=0.3,
    )
    recorder = Recorder()
    result = asyncio.run(ProbeRunner(recorder).run_once(target))
    samples, _events = recorder.drain()
    success = next(s for s in samples if s.name == "lifeline_probe_success")
    assert success.labels == {"target": "agency-dns", "role": "dns", "path": "auto", "kind": "dns"}
    return result.success, result.reason, result.received


def test_probe_against_a_real_responder(responder: Responder) -> None:
    ok, reason, received = probe(responder.port, "cad.agency.internal", expect="10.20.0.11")
    assert (ok, reason, received) == (True, "", 1)
    assert probe(responder.port, "cad.agency.internal", expect="10.99.0.1")[:2] == (False, "mismatch")
    assert probe(responder.port, "empty.agency.internal")[:2] == (False, "mismatch")
    assert probe(responder.port, "nosuch.agency.internal")[:2] == (False, "nxdomain")
    assert probe(responder.port, "fail.agency.internal")[:2] == (False, "servfail")
    assert probe(responder.port, "refuse.agency.internal")[:2] == (False, "refused")
    assert probe(responder.port, "slow.agency.internal") == (False, "timeout", 0)
    # An answer with another id is not ours: ignored, so the round times out.
    assert probe(responder.port, "wrongid.agency.internal")[:2] == (False, "timeout")


def test_probe_of_a_closed_port_is_refused(closed_udp_port: int) -> None:
    assert probe(closed_udp_port, "cad.agency.internal")[:2] == (False, "refused")


@pytest.fixture
def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
