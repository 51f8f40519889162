"""ICMP echo probe: a burst of ``target.count`` echoes ``target.spacing`` apart per round.

Uses an unprivileged ``SOCK_DGRAM``/``IPPROTO_ICMP`` socket (the kernel picks the echo id and
only hands us our own replies) and falls back to a raw socket when ``net.ipv4.ping_group_range``
forbids it. Replies are matched by sequence number *and* source address. RTT comes from the
kernel's receive timestamp (SO_TIMESTAMPNS) minus the wall time taken just before ``sendto``,
checked against the monotonic clock, so a busy event loop does not inflate it. IPv4 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
import time
from dataclasses import dataclass, field

from lifeline_agent.config import Target
from lifeline_agent.probes import stats
from lifeline_agent.probes.base import (
    ROUND_METRICS,
    ProbeContext,
    ProbeResult,
    ProbeSpec,
    probe_socket,
    reason_for_errno,
    register,
    resolve,
)

ECHO_REQUEST, ECHO_REPLY, DEST_UNREACHABLE, TIME_EXCEEDED = 8, 0, 3, 11
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
PAYLOAD = b"lifeline-probe".ljust(48, b".")  # fixed filler: the probe carries no data
_TIMESPEC = struct.Struct("@qq")
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err
_ORIGIN_ICMP = 2


def checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, payload: bytes = PAYLOAD) -> bytes:
    header = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, checksum(header + payload), ident, seq) + payload


@dataclass(frozen=True, slots=True)
class IcmpMessage:
    type: int
    code: int
    ident: int
    seq: int


def parse_icmp(data: bytes, *, raw: bool) -> IcmpMessage | None:
    """An echo reply, or an error quoting one of our echoes; None for anything else.

    ``raw`` packets start with the IPv4 header; datagram-socket packets start at ICMP.
    """
    if raw:
        if len(data) < 20:
            return None
        data = data[(data[0] & 0x0F) * 4 :]
    if len(data) < 8:
        return None
    icmp_type, code = data[0], data[1]
    if icmp_type == ECHO_REPLY:
        ident, seq = struct.unpack("!HH", data[4:8])
        return IcmpMessage(icmp_type, code, ident, seq)
    if icmp_type in (DEST_UNREACHABLE, TIME_EXCEEDED):
        quoted = data[8:]  # the IP header and first 8 bytes of our echo request
        if len(quoted) < 20:
            return None
        inner = quoted[(quoted[0] & 0x0F) * 4 :]
        if len(inner) < 8 or inner[0] != ECHO_REQUEST:
            return None
        ident, seq = struct.unpack("!HH", inner[4:8])
        return IcmpMessage(icmp_type, code, ident, seq)
    return None


def open_socket(interface: str = "") -> tuple[socket.socket, bool]:
    """(socket, is_raw): a datagram ICMP socket if allowed, else a raw one (CAP_NET_RAW).

    Raises PermissionError when neither is allowed, OSError(ENODEV) for an unknown interface.
    """
    try:
        sock = probe_socket(
            socket.AF_INET,
            socket.SOCK_DGRAM,
            socket.IPPROTO_ICMP,
            interface=interface,
            options=((socket.IPPROTO_IP, IP_RECVERR, 1),),
        )
        raw = False
    except PermissionError:
        sock = probe_socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP, interface=interface)
        raw = True
    # Every Linux has kernel receive stamps; elsewhere the monotonic clock alone is used.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    return sock, raw


@dataclass(slots=True)
class EchoLedger:
    """Which echoes of one round came back: the received count and loss the probe reports.

    Pure bookkeeping, fed with the sequence numbers sent and the messages received, so the loss
    is tested without sockets or root. An answer counts once, for an echo of this round, from the
    address probed (and, on a raw socket that sees every echo on the host, with our id)."""

    address: str
    ident: int
    raw: bool
    first_seq: int
    count: int
    sent: set[int] = field(default_factory=set)
    rtts: dict[int, float] = field(default_factory=dict)

    def seq(self, index: int) -> int:
        return (self.first_seq + index) & 0xFFFF

    def ours(self, message: IcmpMessage | None, source: str) -> bool:
        """True for a reply from the target, or an error, about an echo still unanswered."""
        if message is None or (self.raw and message.ident != self.ident):
            return False
        if message.seq not in self.sent or message.seq in self.rtts:
            return False
        return message.type != ECHO_REPLY or source == self.address

    def answer(self, seq: int, rtt: float) -> None:
        self.rtts[seq] = rtt

    @property
    def complete(self) -> bool:
        return len(self.rtts) == self.count

    def result(self, error: str, detail: str, socket_kind: str) -> ProbeResult:
        """The round as the probe reports it: ``count`` sent, the answered ones received."""
        ordered = tuple(self.rtts.get(self.seq(i)) for i in range(self.count))
        summary = stats.summarize(ordered)
        if summary is None:
            return ProbeResult(False, error or "timeout", sent=self.count, rtts=ordered, detail=detail)
        received = len(self.rtts)
        return ProbeResult(
            True,
            rtt_min=summary.min,
            rtt_avg=summary.avg,
            rtt_max=summary.max,
            sent=self.count,
            received=received,
            rtts=ordered,
            detail=f"{received}/{self.count} replies from {self.address} ({socket_kind} socket)",
        )


@dataclass(slots=True)
class _Burst:
    """One round on a socket: send times by sequence, the ledger of answers, the first error."""

    sock: socket.socket
    ledger: EchoLedger
    sent_mono: dict[int, int] = field(default_factory=dict)
    sent_real: dict[int, int] = field(default_factory=dict)
    error: str = ""
    detail: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def send(self, index: int) -> None:
        seq = self.ledger.seq(index)
        packet = echo_request(self.ledger.ident, seq)
        self.ledger.sent.add(seq)
        self.sent_real[seq] = time.time_ns()
        self.sent_mono[seq] = time.monotonic_ns()
        try:
            self.sock.sendto(packet, (self.ledger.address, 0))
        except OSError as exc:
            # A blackhole route makes sendto fail with EINVAL: there is no way out.
            reason = "no_route" if exc.errno == errno.EINVAL else reason_for_errno(exc.errno)
            self._fail(reason, f"sendto: {exc.strerror}")

    def on_readable(self) -> None:
        while True:
            try:
                data, ancdata, _flags, source = self.sock.recvmsg(2048, 256)
            except BlockingIOError:
                break
            except OSError as exc:  # a pending socket error (e.g. EHOSTUNREACH)
                self._fail(reason_for_errno(exc.errno), f"recvmsg: {exc.strerror}")
                continue
            recv_mono = time.monotonic_ns()
            message = parse_icmp(data, raw=self.ledger.raw)
            if message is None or not self.ledger.ours(message, source[0]):
                continue
            if message.type == ECHO_REPLY:
                self.ledger.answer(message.seq, self._rtt(message.seq, recv_mono, ancdata))
            elif message.type == DEST_UNREACHABLE:
                self._fail("no_route" if message.code == 0 else "unreachable", f"ICMP from {source[0]}")
            else:
                self._fail("ttl_exceeded", f"ICMP time exceeded from {source[0]}")
        if not self.ledger.raw:
            self._drain_errors()
        if self.ledger.complete:
            self.done.set()

    def _drain_errors(self) -> None:
        """ICMP errors for a datagram socket arrive on its error queue (IP_RECVERR)."""
        while True:
            try:
                _data, ancdata, _flags, _addr = self.sock.recvmsg(512, 512, MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # pragma: no cover - the queue only fails if the socket is gone
                return
            for level, kind, payload in ancdata:
                if level == socket.IPPROTO_IP and kind == IP_RECVERR and len(payload) >= _EXTENDED_ERR.size:
                    ee_errno, origin, icmp_type, code, _pad, _info, _data2 = _EXTENDED_ERR.unpack_from(
                        payload
                    )
                    if origin == _ORIGIN_ICMP and icmp_type == TIME_EXCEEDED:
                        self._fail("ttl_exceeded", "ICMP time exceeded")
                    elif origin == _ORIGIN_ICMP and icmp_type == DEST_UNREACHABLE:
                        self._fail(
                            "no_route" if code == 0 else "unreachable", f"ICMP unreachable code {code}"
                        )
                    else:
                        self._fail(reason_for_errno(ee_errno), f"socket error {os.strerror(ee_errno)}")

    def _rtt(self, seq: int, recv_mono: int, ancdata: list[tuple[int, int, bytes]]) -> float:
        mono_rtt = recv_mono - self.sent_mono[seq]
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(payload)
                kernel_rtt: int = sec * 1_000_000_000 + nsec - self.sent_real[seq]
                # The kernel stamp can only be earlier than our own receive time; anything else
                # means the wall clock stepped between send and receive.
                if 0 <= kernel_rtt <= mono_rtt + 1_000_000:
                    return kernel_rtt / 1e9
        return mono_rtt / 1e9

    def _fail(self, reason: str, detail: str) -> None:
        if not self.error:
            self.error, self.detail = reason, detail


async def run(target: Target, ctx: ProbeContext) -> ProbeResult:
    resolved = await resolve(target.host, socket.AF_INET)
    if resolved is None:
        return ProbeResult(False, "resolve", detail=f"{target.host!r} does not resolve to IPv4")
    address = resolved[1][0]
    try:
        sock, raw = open_socket(target.interface)
    except PermissionError:
        return ProbeResult(False, "no_permission", detail="ping_group_range forbids ICMP and no CAP_NET_RAW")
    except OSError as exc:
        reason = "no_interface" if exc.errno == errno.ENODEV else reason_for_errno(exc.errno)
        return ProbeResult(False, reason, detail=f"socket: {exc.strerror} ({target.interface or 'any'})")
    # The kernel replaces the id of a datagram socket; a raw socket needs one that is ours.
    ident = int.from_bytes(os.urandom(2), "big")
    ledger = EchoLedger(address, ident, raw, int.from_bytes(os.urandom(2), "big"), target.count)
    burst = _Burst(sock, ledger)
    loop = asyncio.get_running_loop()
    ctx.logger.debug("icmp burst", extra={"address": address, "raw_socket": raw, "count": target.count})
    with sock:
        loop.add_reader(sock.fileno(), burst.on_readable)
        try:
            for index in range(target.count):
                if index:
                    await asyncio.sleep(target.spacing)
                burst.send(index)
            wait = min(target.timeout, ctx.remaining())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await burst.done.wait()
        finally:
            loop.remove_reader(sock.fileno())
    no_reply = burst.detail or f"no reply from {address} within {target.timeout:g}s"
    return ledger.result(burst.error, no_reply, "raw" if raw else "datagram")


SPEC = register(
    ProbeSpec(
        kind="icmp",
        run=run,
        metrics=(*ROUND_METRICS, "lifeline_probe_mos"),
        sample_config="""[[targets]]
name = "home-router"
role = "router"
kind = "icmp"
host = "192.168.1.1"
count = 5          # echoes per round
spacing = "20ms"   # gap between echoes
timeout = "500ms"
""",
    )
)
