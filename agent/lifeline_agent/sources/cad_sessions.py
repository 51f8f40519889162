"""The real CAD session, untouched: the kernel's TCP_INFO for established sockets to CAD.

inet_diag (pyroute2 ``DiagSocket``, ``INET_DIAG_INFO``) returns every established TCP socket's
``tcp_info``: smoothed RTT, total retransmits, unacknowledged and lost segments. The agent reads
those numbers for sockets whose peer is a CAD endpoint; it never opens, reads or writes the socket
itself, so no payload is ever seen. ``ss -tin`` output is the fallback backend.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lifeline_agent.config import AgentConfig
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
    sample,
)
from lifeline_agent.sources.errors import SourceError, SourceParseError, SourceReadError, SourceUnavailable
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
    )


_SS_ADDR = re.compile(r"^(?P<host>\[[^\]]+\]|[^\s]+):(?P<port>\d+|\*)$")
_SS_FIELD = re.compile(r"\b(rtt|retrans|unacked|lost):(\S+)")


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
            retrans = values.get("retrans", "0/0").partition("/")[2] or "0"
            out.append(
                TcpSession(
                    *current,
                    rtt=float(rtt) / 1000.0,
                    rttvar=float(rttvar or 0) / 1000.0,
                    total_retrans=int(retrans),
                    unacked=int(values.get("unacked", "0")),
                    lost=int(values.get("lost", "0")),
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


class DiagBackend:
    name = "inet_diag"

    def available(self) -> Availability:
        try:
            self.sessions()
        except SourceError as exc:
            return Availability(False, exc.reason)
        return Availability(True)

    def sessions(self) -> list[TcpSession]:
        try:
            from pyroute2 import DiagSocket
            from pyroute2.netlink.exceptions import NetlinkError
        except ImportError as exc:
            raise SourceUnavailable("pyroute2 is not installed") from exc
        out: list[TcpSession] = []
        try:
            with DiagSocket() as ds:
                ds.bind()
                for family in (socket.AF_INET, socket.AF_INET6):
                    for msg in ds.get_sock_stats(
                        family=family, states=1 << SS_ESTABLISHED, extensions=1 << (INET_DIAG_INFO - 1)
                    ):
                        session = session_from_diag(_plain(msg))
                        if session is not None:
                            out.append(session)
        except (NetlinkError, OSError) as exc:
            raise SourceUnavailable(f"inet_diag: {exc}") from exc
        return out


_TCP_INFO_FIELDS = ("tcpi_rtt", "tcpi_rttvar", "tcpi_total_retrans", "tcpi_unacked", "tcpi_lost")


def _plain(msg: Any) -> dict[str, Any]:
    info = msg.get_attr("INET_DIAG_INFO")
    plain: dict[str, Any] = {k: msg[k] for k in ("idiag_src", "idiag_sport", "idiag_dst", "idiag_dport")}
    plain["attrs"] = [["INET_DIAG_INFO", {k: info[k] for k in _TCP_INFO_FIELDS}]] if info is not None else []
    return plain


class SsBackend:
    name = "ss"

    def __init__(self, timeout: float = 2.0) -> None:
        self.timeout = timeout

    def available(self) -> Availability:
        if shutil.which("ss") is None:
            return Availability(False, "ss (iproute2) not installed")
        return Availability(True)

    def sessions(self) -> list[TcpSession]:
        try:
            done = subprocess.run(
                ["ss", "-tinH", "state", "established"],
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise SourceUnavailable("ss (iproute2) not installed") from exc
        except subprocess.TimeoutExpired as exc:
            raise SourceReadError(f"ss timed out after {self.timeout:g}s") from exc
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
        try:
            sessions, _ = read_first(self.backends, lambda b: b.sessions())
        except SourceError as exc:
            return Reading(error=exc.reason)
        matched = match(sessions, self._endpoint_addresses())
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
            facts.append(
                CadSessionFacts(
                    target=target,
                    sessions=len(found),
                    rtt=worst.rtt if worst else None,
                    rttvar=worst.rttvar if worst else None,
                    retransmits=self._retrans[target],
                    unacked=sum(s.unacked for s in found),
                    lost=sum(s.lost for s in found),
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
