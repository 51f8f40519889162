"""What every probe shares: its result, its context, its registry entry, and small socket helpers.

A probe is ``async def run(target, ctx) -> ProbeResult``. An expected network failure returns a
failed result whose ``reason`` comes from the closed set ``REASONS`` (it becomes a label value and
an event attribute, so never raw error text); only programming errors raise.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from lifeline_agent.clock import Clock
from lifeline_agent.config import Target
from lifeline_agent.probes import stats
from lifeline_wire.catalog import CATALOG, MetricSpec

# Why a probe round failed. Closed on purpose: these are label and attribute values.
REASONS = frozenset(
    {
        "timeout",  # nothing came back in time
        "refused",  # the host answered "no one listens here" (TCP RST)
        "unreachable",  # an ICMP unreachable or the kernel's EHOSTUNREACH
        "no_route",  # no route to the network (ENETUNREACH)
        "ttl_exceeded",  # a router on the way dropped it (ICMP time exceeded)
        "blocked",  # a local firewall refused the send (EPERM)
        "resolve",  # the name did not resolve
        "nxdomain",  # dns: the resolver says the name does not exist
        "servfail",  # dns: the resolver failed to answer (SERVFAIL, FORMERR)
        "mismatch",  # dns: an answer without the expected address (or without any address)
        "bad_reply",  # dns: the reply could not be parsed
        "no_permission",  # neither an ICMP datagram nor a raw socket is allowed
        "no_interface",  # the interface to bind to does not exist
        "send_error",  # another local error while sending
        "deadline",  # the probe overran its deadline and was cancelled (runner)
        "error",  # the probe raised: a bug, logged with its traceback (runner)
        "unsupported",  # no probe is registered for this kind (runner)
    }
)

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One round of one probe. Times are seconds; RTT fields are None when nothing came back."""

    success: bool
    reason: str = ""
    rtt_min: float | None = None
    rtt_avg: float | None = None
    rtt_max: float | None = None
    jitter: float | None = None  # filled by the runner (a running estimate across rounds)
    sent: int = 0
    received: int = 0
    duration: float = 0.0  # filled by the runner
    # One entry per echo in send order: its RTT, or None if it was lost.
    rtts: tuple[float | None, ...] = ()
    # Free text for logs and `probe-once --debug` only; never a label.
    detail: str = ""

    def __post_init__(self) -> None:
        if self.reason and self.reason not in REASONS:
            raise ValueError(f"probe reason {self.reason!r} is not one of REASONS")

    @property
    def loss(self) -> float:
        return stats.loss_ratio(self.sent, self.received)


@dataclass(frozen=True, slots=True)
class ProbeContext:
    logger: logging.LoggerAdapter[logging.Logger]
    deadline: float  # on clock.monotonic(); the probe should be done by then
    clock: Clock

    def remaining(self) -> float:
        return max(0.0, self.deadline - self.clock.monotonic())


ProbeFunc = Callable[[Target, ProbeContext], Awaitable[ProbeResult]]


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    kind: str
    run: ProbeFunc
    # The catalog metrics this probe's rounds produce (the runner emits them).
    metrics: tuple[str, ...]
    # A TOML snippet of one target of this kind, for docs and `--help`.
    sample_config: str
    specs: tuple[MetricSpec, ...] = field(init=False)

    def __post_init__(self) -> None:
        missing = [name for name in self.metrics if name not in CATALOG]
        if missing:
            raise ValueError(f"probe {self.kind}: metrics not in the catalog: {missing}")
        object.__setattr__(self, "specs", tuple(CATALOG[name] for name in self.metrics))


REGISTRY: dict[str, ProbeSpec] = {}

# What every probe's rounds produce (the runner emits them); a probe may declare more after these.
ROUND_METRICS = (
    "lifeline_probe_success",
    "lifeline_probe_duration_seconds",
    "lifeline_probe_rtt_seconds",
    "lifeline_probe_jitter_seconds",
    "lifeline_probe_loss_ratio",
    "lifeline_probe_packets_sent_total",
    "lifeline_probe_packets_received_total",
    "lifeline_probe_consecutive_failures",
)


def register(spec: ProbeSpec) -> ProbeSpec:
    if spec.kind in REGISTRY:
        raise ValueError(f"probe kind {spec.kind!r} registered twice")
    REGISTRY[spec.kind] = spec
    return spec


def reason_for_errno(code: int | None) -> str:
    """Map a socket error number to a reason from REASONS."""
    return {
        errno.ECONNREFUSED: "refused",
        errno.ETIMEDOUT: "timeout",
        errno.EHOSTUNREACH: "unreachable",
        errno.EHOSTDOWN: "unreachable",
        errno.ENETUNREACH: "no_route",
        errno.ENETDOWN: "no_route",
        errno.EPERM: "blocked",
        errno.EACCES: "blocked",
        errno.ENODEV: "no_interface",
    }.get(code or 0, "send_error")


def bind_to_device(sock: socket.socket, interface: str) -> None:
    """SO_BINDTODEVICE: send and receive only through ``interface`` (raises OSError ENODEV)."""
    if interface:
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode() + b"\0")


def probe_socket(
    family: int,
    kind: int,
    proto: int = 0,
    *,
    interface: str = "",
    options: tuple[tuple[int, int, int], ...] = (),
) -> socket.socket:
    """A non-blocking socket bound to ``interface`` (if any) with ``options`` set, for one round.

    Every probe opens its socket here, so binding to the backup interface is done one way. Raises
    OSError (PermissionError for a socket type we may not open, ENODEV for an unknown interface)
    after closing what it opened.
    """
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        bind_to_device(sock, interface)
        for level, name, value in options:
            sock.setsockopt(level, name, value)
    except OSError:
        sock.close()
        raise
    return sock


def failed_round(reason: str, detail: str) -> ProbeResult:
    """A one-packet round (tcp, dns) that sent its packet and got nothing back."""
    return ProbeResult(False, reason, sent=1, rtts=(None,), detail=detail)


def answered_round(rtt: float, detail: str, reason: str = "") -> ProbeResult:
    """A one-packet round that got its answer after ``rtt`` seconds (a failure if ``reason``)."""
    return ProbeResult(
        not reason,
        reason,
        rtt_min=rtt,
        rtt_avg=rtt,
        rtt_max=rtt,
        sent=1,
        received=1,
        rtts=(rtt,),
        detail=detail,
    )


def numeric_address(host: str, family: int) -> tuple[int, str] | None:
    """(family, address) when ``host`` is already an IP address of ``family`` (or of any, AF_UNSPEC)."""
    for fam in (socket.AF_INET, socket.AF_INET6):
        if family not in (socket.AF_UNSPEC, fam):
            continue
        try:
            socket.inet_pton(fam, host)
        except (OSError, ValueError):
            continue
        return fam, host
    return None


async def resolve(host: str, family: int, port: int = 0) -> tuple[int, tuple[str, int]] | None:
    """The first address of ``host`` as (family, sockaddr), or None if it does not resolve.

    An address literal is taken as it is: asking getaddrinfo would cost a thread hand-off per round
    (the event loop runs it in its executor) to learn nothing.
    """
    numeric = numeric_address(host, family)
    if numeric is not None:
        return numeric[0], (numeric[1], port)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return None
    for fam, _type, _proto, _canon, sockaddr in infos:
        if fam in (socket.AF_INET, socket.AF_INET6):
            return fam, (str(sockaddr[0]), int(sockaddr[1]))
    return None
