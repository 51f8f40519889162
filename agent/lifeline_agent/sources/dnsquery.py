"""A minimal DNS client over UDP (stdlib only) for the split-DNS check.

Builds one A or AAAA question with recursion desired, parses the answer section (following name
compression) and returns the addresses. Nothing else of DNS is needed here.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct
from dataclasses import dataclass

from lifeline_agent.errors import SourceParseError, SourceReadError

TYPE_A = 1
TYPE_AAAA = 28
RESOLV_CONF = "/etc/resolv.conf"
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    rcode: str
    addresses: tuple[str, ...]


def build_query(name: str, qid: int, qtype: int = TYPE_A) -> bytes:
    labels = [label for label in name.rstrip(".").split(".") if label]
    if not labels:
        raise ValueError(f"not a DNS name: {name!r}")
    qname = b""
    for label in labels:
        raw = label.encode("idna")
        if len(raw) > 63:
            raise ValueError(f"label too long in {name!r}")
        qname += bytes([len(raw)]) + raw
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # RD
    return header + qname + b"\x00" + struct.pack("!HH", qtype, 1)


def _skip_name(data: bytes, offset: int) -> int:
    """Offset just past a (possibly compressed) name starting at ``offset``."""
    for _ in range(128):
        if offset >= len(data):
            raise SourceParseError("dns answer", "name runs past the end")
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            return offset + 2
        offset += 1 + length
    raise SourceParseError("dns answer", "name too long")


def parse_response(data: bytes, qid: int) -> DnsAnswer:
    if len(data) < 12:
        raise SourceParseError("dns answer", f"{len(data)} bytes is shorter than a header")
    rid, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", data[:12])
    if rid != qid:
        raise SourceParseError("dns answer", f"id {rid} does not match the query's {qid}")
    if not flags & 0x8000:
        raise SourceParseError("dns answer", "not a response (QR bit clear)")
    rcode = RCODES.get(flags & 0xF, str(flags & 0xF))
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(data, offset) + 4
    addresses: list[str] = []
    for index in range(ancount):
        offset = _skip_name(data, offset)
        if offset + 10 > len(data):
            raise SourceParseError(f"dns answer record {index}", "truncated")
        rtype, _, _, rdlength = struct.unpack("!HHIH", data[offset : offset + 10])
        offset += 10
        rdata = data[offset : offset + rdlength]
        if len(rdata) != rdlength:
            raise SourceParseError(f"dns answer record {index}", "rdata truncated")
        offset += rdlength
        if rtype == TYPE_A and rdlength == 4:
            addresses.append(str(ipaddress.IPv4Address(rdata)))
        elif rtype == TYPE_AAAA and rdlength == 16:
            addresses.append(str(ipaddress.IPv6Address(rdata)))
    return DnsAnswer(rcode, tuple(addresses))


def query(name: str, server: str, *, port: int = 53, qtype: int = TYPE_A, timeout: float = 1.0) -> DnsAnswer:
    """Ask ``server`` once; a timeout or an unreachable server is a ``SourceReadError``."""
    qid = secrets.randbits(16)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((server, port))
            sock.send(build_query(name, qid, qtype))
            while True:
                data = sock.recv(4096)
                if len(data) >= 2 and struct.unpack("!H", data[:2])[0] == qid:
                    return parse_response(data, qid)
        except TimeoutError as exc:
            raise SourceReadError(f"DNS server {server} did not answer within {timeout:g}s") from exc
        except OSError as exc:
            raise SourceReadError(f"DNS server {server}: {exc.strerror or exc}") from exc


def system_nameserver(path: str = RESOLV_CONF) -> str:
    """The first ``nameserver`` of resolv.conf (127.0.0.53 under systemd-resolved), or ""."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == "nameserver":
                    return fields[1]
    except OSError:
        return ""
    return ""
