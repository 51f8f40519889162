"""The real CAD session, untouched: the kernel's TCP_INFO for established sockets to CAD.

inet_diag (``SOCK_DIAG_BY_FAMILY`` with ``INET_DIAG_INFO``) returns an established TCP socket's
``tcp_info``: smoothed RTT, total retransmits, unacknowledged and lost segments. The agent reads
those numbers for sockets whose peer is a CAD endpoint; it never opens, reads or writes the socket
itself, so no payload is ever seen. ``ss -tin`` output is the fallback backend.

It is read every 2 s, so the inet_diag backend keeps one socket open, asks once for both address
families, hands the kernel a filter (``INET_DIAG_REQ_BYTECODE``) naming the CAD addresses and
ports, so only CAD sockets come back, and walks the reply with ``struct`` for the five
``tcp_info`` fields used, instead of pyroute2's ``DiagSocket`` decoding every socket on the machine.

Over 500 lines on purpose: the inet_diag request, its kernel filter and the raw reply parser are one
protocol, kept beside the ``ss`` fallback whose sessions they must match.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from lifeline_agent.config import AgentConfig
from lifeline_agent.errors import SourceError, SourceParseError, SourceReadError, SourceUnavailable
from lifeline_agent.netlink.attributes import NLM_F_DUMP, NLM_F_REQUEST, pack_attr, pack_message, split_attrs
from lifeline_agent.netlink.kept_socket import KeptNetlinkSocket
from lifeline_agent.sources.base import (
    IS_LINUX,
    Availability,
    Reading,
    Source,
    SourceEvent,
    SourceSample,
    first_available,
    not_linux,
    read_first,
    run_tool,
    sample,
)
from lifeline_agent.sources.registry import SourceSpec, register

SS_ESTABLISHED = 1
INET_DIAG_INFO = 2


@dataclass(frozen=True, slots=True)
class TcpSession:
    src: str
    sport: int
    dst: str
    dport: int
    rtt: float  # seconds (tcpi_rtt is microseconds)
    rttvar: float
    total_retrans: int
    unacked: int
    lost: int = 0
    # How the session is doing right now, which tells a struggling session from a dying one: the
    # retransmissions in a row of the oldest unacknowledged segment (tcpi_retransmits; reset by the
    # next acknowledgement), the retransmission timeout, and the time since an ACK last arrived.
    retransmits: int = 0
    rto: float = 0.0  # seconds
    since_ack: float | None = None  # seconds; None when not reported

    @property
    def key(self) -> tuple[str, int, str, int]:
        return (self.src, self.sport, self.dst, self.dport)


@dataclass(frozen=True, slots=True)
class CadEndpoint:
    target: str
    host: str  # an address, or a name resolved by the source
    port: int = 0  # 0 = any port on that host


@dataclass(frozen=True, slots=True)
class CadSessionFacts:
    target: str
    sessions: int
    rtt: float | None = None  # the worst session's smoothed RTT, seconds
    rttvar: float | None = None
    retransmits: int = 0  # retransmitted segments seen since the agent started (monotonic)
    unacked: int = 0  # segments in flight, summed over sessions
    lost: int = 0
    stalled: int = 0  # the most retransmissions in a row of one segment, over the sessions
    rto: float | None = None  # the longest retransmission timeout, seconds
    # The longest any session with data in flight has gone without an acknowledgement, seconds.
    since_ack: float | None = None


@dataclass(frozen=True, slots=True)
class CadSessionsState:
    targets: tuple[CadSessionFacts, ...] = ()

    def get(self, target: str) -> CadSessionFacts | None:
        return next((t for t in self.targets if t.target == target), None)


def normalize(address: str) -> str:
    """Canonical text of an address; IPv4-mapped IPv6 (``::ffff:10.0.0.1``) becomes the IPv4 form."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def session_from_diag(msg: Mapping[str, Any]) -> TcpSession | None:
    """A dumped inet_diag_msg (``idiag_*`` fields plus INET_DIAG_INFO) → session; None without tcp_info."""
    info = None
    for name, value in msg.get("attrs", ()):
        if name == "INET_DIAG_INFO":
            info = value
    if not isinstance(info, Mapping):
        return None
    return TcpSession(
        src=normalize(str(msg["idiag_src"])),
        sport=int(msg["idiag_sport"]),
        dst=normalize(str(msg["idiag_dst"])),
        dport=int(msg["idiag_dport"]),
        rtt=int(info["tcpi_rtt"]) / 1e6,
        rttvar=int(info["tcpi_rttvar"]) / 1e6,
        total_retrans=int(info["tcpi_total_retrans"]),
        unacked=int(info["tcpi_unacked"]),
        lost=int(info.get("tcpi_lost", 0)),
        retransmits=int(info.get("tcpi_retransmits", 0)),
        rto=int(info.get("tcpi_rto", 0)) / 1e6,
        since_ack=int(info["tcpi_last_ack_recv"]) / 1e3 if "tcpi_last_ack_recv" in info else None,
    )


_SS_ADDR = re.compile(r"^(?P<host>\[[^\]]+\]|[^\s]+):(?P<port>\d+|\*)$")
_SS_FIELD = re.compile(r"\b(rtt|retrans|unacked|lost|rto|lastack):(\S+)")


def _split_addr(text: str, where: str) -> tuple[str, int]:
    m = _SS_ADDR.match(text)
    if m is None or m["port"] == "*":
        raise SourceParseError(where, f"not an address:port: {text!r}")
    host = m["host"].strip("[]").split("%", 1)[0]  # drop a scope id (fe80::1%eth0)
    return normalize(host), int(m["port"])


def parse_ss(text: str) -> list[TcpSession]:
    """``ss -tinH state established``: a socket line (Recv-Q Send-Q local peer), then its info line."""
    out: list[TcpSession] = []
    current: tuple[str, int, str, int] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if not line[0].isspace():
            fields = line.split()
            if len(fields) < 4:
                raise SourceParseError(
                    f"ss line {number}", f"expected Recv-Q Send-Q local peer, got {line!r}"
                )
            src, sport = _split_addr(fields[2], f"ss line {number}")
            dst, dport = _split_addr(fields[3], f"ss line {number}")
            current = (src, sport, dst, dport)
            continue
        if current is None:
            raise SourceParseError(f"ss line {number}", "info line without a socket line")
        values = dict(_SS_FIELD.findall(line))
        try:
            rtt, _, rttvar = values.get("rtt", "0/0").partition("/")
            now_retrans, _, retrans = values.get("retrans", "0/0").partition("/")
            lastack = values.get("lastack")
            out.append(
                TcpSession(
                    *current,
                    rtt=float(rtt) / 1000.0,
                    rttvar=float(rttvar or 0) / 1000.0,
                    total_retrans=int(retrans or "0"),
                    unacked=int(values.get("unacked", "0")),
                    lost=int(values.get("lost", "0")),
                    retransmits=int(now_retrans or "0"),
                    rto=float(values.get("rto", "0")) / 1000.0,
                    since_ack=float(lastack) / 1000.0 if lastack is not None else None,
                )
            )
        except ValueError as exc:
            raise SourceParseError(f"ss line {number}", f"bad number in {line.strip()[:80]!r}") from exc
        current = None
    return out


def match(
    sessions: Sequence[TcpSession], endpoints: Mapping[str, tuple[set[str], int]]
) -> dict[str, list[TcpSession]]:
    """Sessions per CAD target: peer address among the target's addresses and port equal (or any)."""
    out: dict[str, list[TcpSession]] = {target: [] for target in endpoints}
    for s in sessions:
        for target, (addresses, port) in endpoints.items():
            if s.dst in addresses and (port == 0 or s.dport == port):
                out[target].append(s)
    return out


# --- raw inet_diag -----------------------------------------------------------------------------------
#
# Layouts from <linux/inet_diag.h> and <linux/tcp.h>; the decoding is checked against pyroute2's on
# recorded kernel replies (tests/agent/sources/test_source_cad_sessions.py).

NETLINK_SOCK_DIAG = 4
TCPDIAG_GETSOCK = 18  # the original request: one walk of the TCP tables gives both families
SOCK_DIAG_BY_FAMILY = 20
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_JMP = 1
INET_DIAG_BC_D_COND = 8
# inet_diag_req_v2: family, protocol, extensions, pad, states; then an inet_diag_sockid left zero.
INET_DIAG_REQ = struct.Struct("=BBBxI48x")
# inet_diag_req (TCPDIAG_GETSOCK): family, source and peer prefix lengths, extensions, a zero
# inet_diag_sockid, states, dbs.
INET_DIAG_REQ_V1 = struct.Struct("=BBBB48xII")
# inet_diag_msg: family, state, timer, retrans, then sockid (ports big-endian, 16-byte addresses),
# interface, cookie, expires, rqueue, wqueue, uid, inode: 72 bytes before the attributes.
INET_DIAG_MSG_HEAD = struct.Struct("=BBBB")
INET_DIAG_PORTS = struct.Struct("!HH")
INET_DIAG_MSG_SIZE = 72
# tcp_info: retransmits @2 (u8); rto @8, unacked @24, lost @32, last_ack_recv @56 (ms), rtt @68,
# rttvar @72, total_retrans @100 (u32).
TCP_INFO = struct.Struct("=2xB5xI12xI4xI20xI8xII24xI")
BC_OP = struct.Struct("=BBH")  # code, yes (jump when true), no (jump when false)
BC_HOSTCOND = struct.Struct("=BBxxi")  # family, prefix length, port (-1 = any)
_ANY_PORT = -1
# A filter no established socket can pass (peer 0.0.0.0): proves the kernel takes our requests.
_NOTHING = (("0.0.0.0", 0),)


def filter_bytecode(wanted: Sequence[tuple[str, int]]) -> bytes:
    """INET_DIAG_REQ_BYTECODE passing a socket whose peer is one of ``wanted`` (address, port; 0 = any).

    One ``D_COND`` per endpoint, joined into an OR as ``ss`` does: a condition that holds falls
    through to a ``JMP`` past the rest (the filter accepts when it runs off the end); one that fails
    jumps over that ``JMP`` to the next condition; the last one's failure jumps beyond the end. An
    IPv4 condition also matches IPv4-mapped peers of dual-stack IPv6 sockets (the kernel does that).
    """
    blocks = []
    for address, port in wanted:
        ip = ipaddress.ip_address(address)
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        cond = BC_HOSTCOND.pack(family, ip.max_prefixlen, port or _ANY_PORT) + ip.packed
        length = BC_OP.size + len(cond)
        blocks.append(BC_OP.pack(INET_DIAG_BC_D_COND, length, length + BC_OP.size) + cond)
    out = b""
    for index, block in enumerate(blocks):
        out += block
        rest = blocks[index + 1 :]
        if rest:  # past the remaining conditions and the JMPs between them
            after = sum(map(len, rest)) + BC_OP.size * (len(rest) - 1)
            out += BC_OP.pack(INET_DIAG_BC_JMP, BC_OP.size, BC_OP.size + after)
    return out


def diag_request(family: int, wanted: Sequence[tuple[str, int]], seq: int) -> bytes:
    """A dump request for ``family``'s ESTABLISHED TCP sockets to ``wanted``, with their tcp_info."""
    head = INET_DIAG_REQ.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), 1 << SS_ESTABLISHED)
    payload = head + pack_attr(INET_DIAG_REQ_BYTECODE, filter_bytecode(wanted))
    return pack_message(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, payload)


def tcpdiag_request(wanted: Sequence[tuple[str, int]], seq: int) -> bytes:
    """The same dump for IPv4 and IPv6 sockets at once (the kernel walks its TCP hash table once).

    The table has a bucket per 8 KiB or so of RAM (262,144 on a 2 GB machine) and every dump walks
    all of them, whatever the filter: one walk instead of one per family halves the read.
    """
    head = INET_DIAG_REQ_V1.pack(socket.AF_INET, 0, 0, 1 << (INET_DIAG_INFO - 1), 1 << SS_ESTABLISHED, 0)
    payload = head + pack_attr(INET_DIAG_REQ_BYTECODE, filter_bytecode(wanted))
    return pack_message(TCPDIAG_GETSOCK, NLM_F_REQUEST | NLM_F_DUMP, seq, payload)


def session_from_raw(payload: memoryview) -> TcpSession | None:
    """One raw inet_diag_msg → a session; None without a (whole) INET_DIAG_INFO."""
    if len(payload) < INET_DIAG_MSG_SIZE:
        raise ValueError(f"inet_diag_msg of {len(payload)} bytes (expected at least {INET_DIAG_MSG_SIZE})")
    family = INET_DIAG_MSG_HEAD.unpack_from(payload)[0]
    info = split_attrs(payload, INET_DIAG_MSG_SIZE).get(INET_DIAG_INFO)
    if info is None or len(info) < TCP_INFO.size or family not in (socket.AF_INET, socket.AF_INET6):
        return None
    sport, dport = INET_DIAG_PORTS.unpack_from(payload, 4)
    width = 4 if family == socket.AF_INET else 16
    retransmits, rto, unacked, lost, last_ack, rtt, rttvar, total_retrans = TCP_INFO.unpack_from(info)
    return TcpSession(
        src=normalize(socket.inet_ntop(family, bytes(payload[8 : 8 + width]))),
        sport=sport,
        dst=normalize(socket.inet_ntop(family, bytes(payload[24 : 24 + width]))),
        dport=dport,
        rtt=rtt / 1e6,
        rttvar=rttvar / 1e6,
        total_retrans=total_retrans,
        unacked=unacked,
        lost=lost,
        retransmits=retransmits,
        rto=rto / 1e6,
        since_ack=last_ack / 1e3,
    )


class DiagBackend(KeptNetlinkSocket):
    """inet_diag over one NETLINK_SOCK_DIAG socket, kept open (``KeptNetlinkSocket``), filtered in
    the kernel."""

    name = "inet_diag"

    def __init__(self) -> None:
        super().__init__(NETLINK_SOCK_DIAG, "inet_diag")
        self._both_families = True  # TCPDIAG_GETSOCK until the kernel refuses it

    def available(self) -> Availability:
        try:
            self._query(_NOTHING)
        except SourceError as exc:
            return Availability(False, exc.reason)
        return Availability(True)

    def sessions(self, wanted: Sequence[tuple[str, int]] = ()) -> list[TcpSession]:
        """Established sessions to ``wanted`` (address, port; 0 = any); none asked, none returned."""
        return self._query(wanted) if wanted else []

    def _query(self, wanted: Sequence[tuple[str, int]]) -> list[TcpSession]:
        with self._lock:
            if self._both_families:
                replies, code = self._ask(partial(tcpdiag_request, wanted))
                if not code:
                    return [s for s in map(session_from_raw, replies) if s is not None]
                self._both_families = False  # a kernel without the old request: ask per family
            out: list[TcpSession] = []
            for family in (socket.AF_INET, socket.AF_INET6):
                replies, code = self._ask(partial(diag_request, family, wanted))
                if code:
                    self._drop()
                    # EINVAL: the kernel refused the filter; ENOENT: no tcp_diag module.
                    raise SourceUnavailable(f"inet_diag: {os.strerror(code)}")
                out.extend(s for s in map(session_from_raw, replies) if s is not None)
            return out

    def _ask(self, request: Callable[[int], bytes]) -> tuple[list[memoryview], int]:
        """Send one dump request: its messages and the kernel's errno. Call with the lock held."""
        replies, code, _interrupted = self._exchange(request, dump=True, what="inet_diag")
        return replies, code


class SsBackend:
    name = "ss"

    def __init__(self, timeout: float = 2.0) -> None:
        self.timeout = timeout

    def available(self) -> Availability:
        if shutil.which("ss") is None:
            return Availability(False, "ss (iproute2) not installed")
        return Availability(True)

    def sessions(self, wanted: Sequence[tuple[str, int]] = ()) -> list[TcpSession]:
        """Every established session (``wanted`` is matched by the caller: ss runs rarely)."""
        done = run_tool(
            ["ss", "-tinH", "state", "established"], self.timeout, missing="ss (iproute2) not installed"
        )
        if done.returncode != 0:
            raise SourceReadError(f"ss: {done.stderr.strip() or done.returncode}")
        return parse_ss(done.stdout)


CadBackend = DiagBackend | SsBackend


def resolve_host(host: str) -> set[str]:
    """The addresses of a CAD host (a literal stays itself)."""
    try:
        return {normalize(str(ipaddress.ip_address(host)))}
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return set()
    return {normalize(str(info[4][0])) for info in infos}


class CadSessionsSource:
    name = "cad_sessions"

    def __init__(
        self,
        endpoints: Sequence[CadEndpoint],
        backends: Sequence[CadBackend],
        *,
        resolve: Callable[[str], set[str]] = resolve_host,
        resolve_every: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoints = tuple(endpoints)
        self.backends = tuple(backends)
        self._resolve = resolve
        self.resolve_every = resolve_every
        self.clock = clock
        self._addresses: dict[str, tuple[set[str], int]] = {}
        self._resolved_at: float | None = None
        self._prev_retrans: dict[tuple[str, int, str, int], int] | None = None
        self._retrans: dict[str, int] = {e.target: 0 for e in self.endpoints}
        self._last_counts: dict[str, int] | None = None

    def available(self) -> Availability:
        if not self.endpoints:
            return Availability(False, "no CAD target configured")
        return first_available(self.backends)

    def close(self) -> None:
        for backend in self.backends:
            if isinstance(backend, DiagBackend):
                backend.close()

    def _endpoint_addresses(self) -> dict[str, tuple[set[str], int]]:
        now = self.clock()
        if self._resolved_at is None or now - self._resolved_at >= self.resolve_every:
            fresh: dict[str, tuple[set[str], int]] = {}
            for e in self.endpoints:
                addresses = self._resolve(e.host) or self._addresses.get(e.target, (set(), 0))[0]
                fresh[e.target] = (addresses, e.port)
            self._addresses, self._resolved_at = fresh, now
        return self._addresses

    def read(self) -> Reading[CadSessionsState]:
        if not self.endpoints:
            return Reading(error="no CAD target configured")
        endpoints = self._endpoint_addresses()
        wanted = sorted({(a, port) for addresses, port in endpoints.values() for a in addresses})
        try:
            sessions, _ = read_first(self.backends, lambda b: b.sessions(wanted))
        except SourceError as exc:
            return Reading(error=exc.reason)
        matched = match(sessions, endpoints)
        first = self._prev_retrans is None
        prev = self._prev_retrans or {}
        current: dict[tuple[str, int, str, int], int] = {}
        facts = []
        for target, found in matched.items():
            for s in found:
                current[s.key] = s.total_retrans
                # Sessions open before the first read are the baseline; later ones count from zero.
                before = prev.get(s.key, s.total_retrans if first else 0)
                self._retrans[target] += max(0, s.total_retrans - before)
            worst = max(found, key=lambda s: s.rtt, default=None)
            waiting = [s.since_ack for s in found if s.unacked and s.since_ack is not None]
            facts.append(
                CadSessionFacts(
                    target=target,
                    sessions=len(found),
                    rtt=worst.rtt if worst else None,
                    rttvar=worst.rttvar if worst else None,
                    retransmits=self._retrans[target],
                    unacked=sum(s.unacked for s in found),
                    lost=sum(s.lost for s in found),
                    stalled=max((s.retransmits for s in found), default=0),
                    rto=max((s.rto for s in found), default=None),
                    since_ack=max(waiting, default=None),
                )
            )
        self._prev_retrans = current
        state = CadSessionsState(tuple(facts))
        samples: list[SourceSample] = []
        for f in state.targets:
            samples.append(sample("lifeline_cad_session_up", f.sessions, target=f.target))
            samples.append(sample("lifeline_cad_session_retransmits_total", f.retransmits, target=f.target))
            samples.append(sample("lifeline_cad_session_unacked_segments", f.unacked, target=f.target))
            if f.rtt is not None:
                samples.append(sample("lifeline_cad_session_rtt_seconds", f.rtt, target=f.target))
        return Reading(tuple(samples), self._events(state), state)

    def _events(self, state: CadSessionsState) -> tuple[SourceEvent, ...]:
        counts = {f.target: f.sessions for f in state.targets}
        before, self._last_counts = self._last_counts, counts
        if before is None:
            return ()
        events = []
        for target, n in counts.items():
            was = before.get(target, 0)
            if was and not n:
                events.append(SourceEvent("cad.session_lost", {"target": target, "sessions_before": was}))
            elif n and not was:
                events.append(SourceEvent("cad.session_established", {"target": target, "sessions": n}))
        return tuple(events)


def _factory(config: AgentConfig, built: Mapping[str, Source]) -> Source | None:
    if not config.providers.cad_sessions:
        return None
    if not IS_LINUX:
        return not_linux("cad_sessions")
    endpoints = [
        CadEndpoint(t.name, t.host, t.port if t.kind == "tcp" else 0) for t in config.cad_targets() if t.host
    ]
    return CadSessionsSource(endpoints, [DiagBackend(), SsBackend()])


SPEC = register(
    SourceSpec(
        kind="cad_sessions",
        factory=_factory,
        metrics=(
            "lifeline_cad_session_up",
            "lifeline_cad_session_rtt_seconds",
            "lifeline_cad_session_retransmits_total",
            "lifeline_cad_session_unacked_segments",
        ),
        backends=("inet_diag", "ss"),
        privileges="none (inet_diag shows every user's sockets' TCP_INFO)",
        summary="RTT, retransmits, unacknowledged segments of established TCP sessions to CAD endpoints",
    )
)
