"""DNS probe: one A query for ``target.query`` to the resolver ``target.host`` over UDP.

Proves the agency resolver answers (and, with ``expect``, answers what CAD needs). The query is
built by ``sources.dnsquery`` (the split-DNS check asks the same way) and the reply parsed here
with the standard library; a reply is accepted only with our query id and question. Reasons:
``timeout``, ``nxdomain``, ``servfail``, ``refused`` (REFUSED, NOTIMP, or ICMP port unreachable),
``mismatch`` (no address, or not the expected one) and ``bad_reply``. An empty ``host`` asks the
first nameserver of ``/etc/resolv.conf``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import struct
import time
from dataclasses import dataclass

from lifeline_agent.config import Target
from lifeline_agent.probes.base import (
    ROUND_METRICS,
    ProbeContext,
    ProbeResult,
    ProbeSpec,
    answered_round,
    failed_round,
    probe_socket,
    reason_for_errno,
    register,
)
from lifeline_agent.sources.dnsquery import build_query, system_nameserver

TYPE_A, TYPE_CNAME, CLASS_IN = 1, 5, 1
DNS_PORT = 53
_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
# rcode → reason (0 NOERROR is judged by its answers)
RCODE_REASONS = {1: "servfail", 2: "servfail", 3: "nxdomain", 4: "refused", 5: "refused"}


class DnsParseError(ValueError):
    """A reply that is not a well-formed DNS message (becomes reason ``bad_reply``)."""


@dataclass(frozen=True, slots=True)
class DnsReply:
    qid: int
    rcode: int
    truncated: bool
    question: str  # lower-case, no trailing dot
    addresses: tuple[str, ...]  # every A record in the answer section (CNAME chains included)


def read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The (possibly compressed) name at ``offset`` and the offset just past it."""
    labels: list[str] = []
    end = -1
    for _ in range(128):  # bounds pointer loops
        if offset >= len(data):
            raise DnsParseError("name runs past the end of the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise DnsParseError("truncated compression pointer")
            if end < 0:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length == 0:
            return ".".join(labels).lower(), end if end >= 0 else offset + 1
        if length > 63 or offset + 1 + length > len(data):
            raise DnsParseError("bad label length")
        labels.append(data[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length
    raise DnsParseError("name has too many labels or a pointer loop")


def parse_reply(data: bytes) -> DnsReply:
    """Parse a reply; raises DnsParseError for anything malformed."""
    if len(data) < _HEADER.size:
        raise DnsParseError(f"{len(data)} bytes is shorter than a DNS header")
    qid, flags, qdcount, ancount, _ns, _ar = _HEADER.unpack_from(data)
    if not flags & 0x8000:
        raise DnsParseError("not a response (QR bit clear)")
    offset = _HEADER.size
    question = ""
    for index in range(qdcount):
        name, offset = read_name(data, offset)
        offset += 4
        if index == 0:
            question = name
    addresses: list[str] = []
    for _ in range(ancount):
        _name, offset = read_name(data, offset)
        if offset + _RR.size > len(data):
            raise DnsParseError("answer record truncated")
        rtype, rclass, _ttl, rdlength = _RR.unpack_from(data, offset)
        offset += _RR.size
        if offset + rdlength > len(data):
            raise DnsParseError("answer data truncated")
        if rtype == TYPE_A and rclass == CLASS_IN and rdlength == 4:
            addresses.append(str(ipaddress.IPv4Address(data[offset : offset + 4])))
        offset += rdlength
    return DnsReply(qid, flags & 0xF, bool(flags & 0x0200), question, tuple(addresses))


def judge(reply: DnsReply, expect: str) -> tuple[str, str]:
    """(reason, detail) for a reply to our question; reason "" means success."""
    if reply.rcode in RCODE_REASONS:
        return RCODE_REASONS[reply.rcode], f"rcode {reply.rcode}"
    if reply.rcode != 0:
        return "servfail", f"rcode {reply.rcode}"
    if not reply.addresses:
        return "mismatch", "no address in the answer" + (" (truncated)" if reply.truncated else "")
    if expect and expect not in reply.addresses:
        return "mismatch", f"answer {list(reply.addresses)} lacks {expect}"
    return "", f"answer {list(reply.addresses)}"


async def _exchange(sock: socket.socket, query: bytes, qid: int, qname: str) -> DnsReply:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, query)
    while True:
        data = await loop.sock_recv(sock, 4096)
        if len(data) < 2 or struct.unpack_from("!H", data)[0] != qid:
            continue  # a late answer to an earlier round, or not for us
        reply = parse_reply(data)
        if reply.question != qname.rstrip(".").lower():
            raise DnsParseError(f"reply is for {reply.question!r}, not {qname!r}")
        return reply


async def run(target: Target, ctx: ProbeContext) -> ProbeResult:
    server = target.host or system_nameserver()
    if not server:
        return failed_round("resolve", "no resolver: host unset, none in resolv.conf")
    port = target.port or DNS_PORT
    qid = int.from_bytes(os.urandom(2), "big")
    query = build_query(target.query, qid)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    try:
        sock = probe_socket(family, socket.SOCK_DGRAM, interface=target.interface)
    except OSError as exc:
        return failed_round(reason_for_errno(exc.errno), str(exc))
    with sock:
        try:
            sock.connect((server, port))
        except OSError as exc:
            return failed_round(reason_for_errno(exc.errno), str(exc))
        timeout = min(target.timeout, ctx.remaining())
        ctx.logger.debug("dns query", extra={"server": server, "query": target.query})
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                reply = await _exchange(sock, query, qid, target.query)
        except TimeoutError:
            return failed_round("timeout", f"no answer within {timeout:g}s")
        except DnsParseError as exc:
            return failed_round("bad_reply", str(exc))
        except OSError as exc:  # ICMP port unreachable arrives as ECONNREFUSED on a connected socket
            return failed_round(reason_for_errno(exc.errno), str(exc))
        rtt = time.monotonic() - started
    reason, detail = judge(reply, target.expect)
    # The resolver answered: the round trip is real even when the answer is wrong.
    return answered_round(rtt, f"{server}:{port} {detail}", reason)


SPEC = register(
    ProbeSpec(
        kind="dns",
        run=run,
        metrics=ROUND_METRICS,
        sample_config="""[[targets]]
name = "agency-dns"
role = "dns"
kind = "dns"
host = "10.20.0.53"           # the resolver to ask ("" = the first nameserver in resolv.conf)
query = "cad.agency.internal"
expect = "10.20.0.10"         # optional: an address the answer must contain
timeout = "1s"
""",
    )
)
