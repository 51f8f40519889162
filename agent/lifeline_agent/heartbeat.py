"""Sends the heartbeat: a small authenticated UDP datagram per path, several times a second.

When no path out of the house is left the agent cannot say so; the collector notices the silence
of these beats instead (``docs/heartbeat.md``). A beat goes out over every path the shipper knows:
the first endpoint over the normal route (through the VPN, the way CAD's packets go: path
``tunnel``), each endpoint bound to the backup interface (``backup``) and approved public
endpoints (``public``). Fallback paths beat every ``fallback_interval`` while the primary path
works — a hotspot is often metered — and every interval as soon as the health model says the home
side or the tunnel is down, so the collector keeps hearing the position over what is left.

Each endpoint hands out its key, UDP port and interval at ``POST /api/v1/heartbeat`` (the agent's
token proves who asks); the key stays in memory. Sockets are non-blocking: a send never waits,
and a path that cannot send (no route, no interface) just misses that beat. The beats come from a
thread of their own (see ``Sender.run``); offers are fetched on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import json
import logging
import math
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lifeline_agent.clock import Clock
from lifeline_agent.config import AgentConfig, HeartbeatSection
from lifeline_agent.delivery.shipper import Shipper
from lifeline_agent.delivery.transport import SO_BINDTODEVICE, Transport, bind_options
from lifeline_agent.errors import RetryableDelivery
from lifeline_agent.health import Assessment
from lifeline_agent.probes.base import numeric_address
from lifeline_wire import BeatDigest, Heartbeat
from lifeline_wire.heartbeat import MAC_SIZE, STATES, encode, stamp

log = logging.getLogger(__name__)

OFFER_PATH = "/api/v1/heartbeat"
DEFAULT_INTERVAL = 0.25
OFFER_REFRESH = 300.0  # a re-issued token, a new collector secret or port is picked up this often
OFFER_RETRY = (5.0, 60.0)  # first and longest wait after an endpoint did not answer
UNSUPPORTED_RETRY = 600.0  # an endpoint without heartbeats (older collector, turned off) is asked again
SIGN_OFF_COPIES = 2  # the last beats of a stop on purpose, per path


def digest_of(assessment: Assessment) -> BeatDigest:
    """The health model's assessment as the beat carries it."""
    state = assessment.verdict_state
    if state not in STATES:  # "unknown": no data yet, which is not "ok"
        state = "degraded"
    ttl = assessment.time_to_loss
    return BeatDigest(
        layer=assessment.verdict_layer,
        state=state,
        risk=assessment.risk if math.isfinite(assessment.risk) else 1.0,
        time_to_loss=ttl if math.isfinite(ttl) else None,
        backup_ready=assessment.backup_ready,
        on_backup=assessment.on_backup,
    )


@dataclass(slots=True)
class Endpoint:
    """One collector endpoint: what it offered (key, port, interval) and where it resolves."""

    base: str
    public: bool
    via_backup: bool
    key: bytes = field(default=b"", repr=False)
    port: int = 0
    interval: float = 0.0
    address: tuple[int, tuple[str, int]] | None = None  # (family, sockaddr)
    next_offer: float = 0.0  # monotonic: when to ask (again)
    failures: int = 0


@dataclass(slots=True)
class BeatPath:
    """One way a beat leaves: an endpoint over the normal route or bound to the backup interface."""

    endpoint: Endpoint
    path: str  # "tunnel" | "backup" | "public"
    interface: str  # "" = follow the routing table
    primary: bool
    last_sent: float = -math.inf
    failing: bool = False
    # The encoded beat without its MAC, and what it was made from: each beat only stamps it.
    frame: bytearray = field(default_factory=bytearray, repr=False)
    made_from: tuple[BeatDigest, float, bytes] | None = None


class Sender:
    """Beats at a fixed rate over every known path. ``run`` until ``stop``; ``beat`` sends one."""

    def __init__(
        self,
        config: HeartbeatSection,
        agent_id: str,
        boot_id: str,
        token: str,
        endpoints: list[tuple[str, bool, bool]],
        transport: Transport,
        clock: Clock,
        digest: Callable[[], BeatDigest | None],
        *,
        backup_interface: Callable[[], str] = lambda: "",
        escalated: Callable[[], bool] = lambda: False,
    ) -> None:
        """``endpoints``: (base URL, public, via_backup) in the shipper's order; ``escalated``: the
        health model says the primary path is down (fallback paths beat at the full rate)."""
        self.config = config
        self.agent_id = agent_id
        self.boot_id = boot_id
        self.token = token
        self.endpoints = [Endpoint(base, public, via_backup) for base, public, via_backup in endpoints]
        self.transport = transport
        self.clock = clock
        self.digest = digest
        self.backup_interface = backup_interface
        self.escalated = escalated
        self.counter = 0
        self.sent = 0
        self.send_errors = 0
        self._sockets: dict[tuple[int, str], socket.socket | None] = {}

    @property
    def interval(self) -> float:
        if self.config.interval is not None:
            return self.config.interval
        for endpoint in self.endpoints:
            if endpoint.interval:
                return endpoint.interval
        return DEFAULT_INTERVAL

    def status(self) -> dict[str, object]:
        """For status.json: where beats go, how often, and how many could not be sent."""
        return {
            "interval": self.interval,
            "endpoints": [
                {"endpoint": e.base, "port": e.port, "offered": bool(e.key)} for e in self.endpoints
            ],
            "sent": self.sent,
            "send_errors": self.send_errors,
        }

    def targets(self) -> list[BeatPath]:
        backup = self.backup_interface() if SO_BINDTODEVICE is not None else ""
        out: list[BeatPath] = []
        for endpoint in self.endpoints:
            if not endpoint.key or endpoint.address is None:
                continue
            out.append(BeatPath(endpoint, "public" if endpoint.public else "tunnel", "", primary=not out))
            if backup and endpoint.via_backup:
                out.append(BeatPath(endpoint, "backup", backup, primary=False))
        return out

    async def run(self, stop: asyncio.Event) -> None:
        """Beat from a thread of its own until ``stop``; ask for offers on the event loop.

        The beats live in a thread because a timer that wakes the event loop four times a second
        costs more than the beat itself (its selector, heap and callbacks); a thread sleeping in
        ``Event.wait`` wakes for a fraction of that, and never holds the loop up."""
        halt = threading.Event()
        thread = threading.Thread(target=self._beat_loop, args=(halt,), name="heartbeat", daemon=True)
        thread.start()
        try:
            while not stop.is_set():
                now = self.clock.monotonic()
                if any(endpoint.next_offer <= now for endpoint in self.endpoints):
                    await self._refresh_offers(now)
                soonest = min((e.next_offer for e in self.endpoints), default=now + OFFER_REFRESH)
                wait = soonest - self.clock.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.1, wait))
        finally:
            halt.set()
            thread.join(timeout=2.0)  # it wakes at once: ``halt`` ends its wait
            try:
                self.sign_off(self.targets())
            finally:
                self.close()

    def _beat_loop(self, halt: threading.Event) -> None:
        targets: dict[tuple[str, str, bool], BeatPath] = {}
        next_beat = self.clock.monotonic()
        while not halt.is_set():
            now = self.clock.monotonic()
            try:
                # Keep each target's timing across rebuilds (an interface discovered, a new offer).
                targets = {
                    key: targets.get(key, target)
                    for target in self.targets()
                    for key in [(target.endpoint.base, target.interface, target.primary)]
                }
                self.beat(list(targets.values()), now)
            except Exception:  # a beat that fails must not end the beating: silence would page
                log.exception("heartbeat not sent")
            interval = self.interval
            next_beat += interval
            if next_beat < now:  # a stall (suspend, a busy machine): carry on, do not burst
                next_beat = now + interval
            halt.wait(max(0.0, next_beat - self.clock.monotonic()))

    def beat(self, targets: list[BeatPath], now: float) -> int:
        """Send one beat on every target that is due; return the datagrams sent."""
        digest = self.digest()
        if digest is None or not targets:
            return 0
        interval = self.interval
        full_rate = digest.on_backup or self.escalated()
        sent_ms = int(self.clock.time() * 1000)
        sent = 0
        for target in targets:
            # A fallback path waits ``fallback_interval`` (less half an interval: on the beat grid).
            resting = now - target.last_sent < self.config.fallback_interval - interval / 2
            if resting and not (target.primary or full_rate):
                continue
            target.last_sent = now
            sock = self._socket(target)
            if sock is None:
                continue
            endpoint = target.endpoint
            made_from = (digest, interval, endpoint.key)
            if target.made_from != made_from:
                beat = Heartbeat(self.agent_id, self.boot_id, 0, sent_ms, target.path, interval, digest)
                target.frame = bytearray(encode(beat, endpoint.key)[:-MAC_SIZE])
                target.made_from = made_from
            for _copy in range(self.config.copies):
                self.counter += 1
                datagram = stamp(target.frame, self.counter, sent_ms, endpoint.key)
                try:
                    sock.sendto(datagram, endpoint.address[1])  # type: ignore[index]
                except OSError as exc:
                    self.send_errors += 1
                    if not target.failing:
                        target.failing = True
                        log.info(
                            "heartbeat via %s to %s cannot be sent: %s",
                            target.interface or "the default route",
                            endpoint.base,
                            exc.strerror or exc,
                        )
                    break
                sent += 1
                if target.failing:
                    target.failing = False
                    log.info(
                        "heartbeat via %s to %s sent again",
                        target.interface or "the default route",
                        endpoint.base,
                    )
        self.sent += sent
        return sent

    def sign_off(self, targets: list[BeatPath]) -> int:
        """The last beats of a stop on purpose, over every path (twice: one may be lost), so the
        collector knows the position stops rather than goes dark; return the datagrams sent."""
        digest = self.digest()
        if digest is None:
            return 0
        sent_ms = int(self.clock.time() * 1000)
        sent = 0
        for target in targets:
            sock = self._socket(target)
            if sock is None:
                continue
            endpoint = target.endpoint
            beat = Heartbeat(
                self.agent_id, self.boot_id, 0, sent_ms, target.path, self.interval, digest, signing_off=True
            )
            frame = bytearray(encode(beat, endpoint.key)[:-MAC_SIZE])
            for _copy in range(SIGN_OFF_COPIES):
                self.counter += 1
                with contextlib.suppress(OSError):  # a path that is gone cannot carry it: no matter
                    sock.sendto(stamp(frame, self.counter, sent_ms, endpoint.key), endpoint.address[1])  # type: ignore[index]
                    sent += 1
        self.sent += sent
        return sent

    def _socket(self, target: BeatPath) -> socket.socket | None:
        """A non-blocking socket for ``target``'s family and interface, kept for the next beats.

        None when it cannot be bound to the interface: for good when the agent lacks the privilege
        (said once), for this beat only when the interface is missing (a hotspot unplugged)."""
        assert target.endpoint.address is not None
        family = target.endpoint.address[0]
        key = (family, target.interface)
        if key in self._sockets:
            return self._sockets[key]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        if target.interface:
            try:
                for level, option, value in bind_options(target.interface):
                    sock.setsockopt(level, option, value)
            except OSError as exc:
                sock.close()
                if exc.errno not in (errno.EPERM, errno.EACCES):
                    return None
                log.warning(
                    "heartbeats cannot be bound to %s: %s (no beats over the backup path)",
                    target.interface,
                    exc.strerror or exc,
                )
                self._sockets[key] = None
                return None
        self._sockets[key] = sock
        return sock

    def close(self) -> None:
        for sock in self._sockets.values():
            if sock is not None:
                sock.close()
        self._sockets = {}

    async def _refresh_offers(self, now: float) -> None:
        due = [endpoint for endpoint in self.endpoints if endpoint.next_offer <= now]
        await asyncio.gather(*(self._offer(endpoint) for endpoint in due))

    async def _offer(self, endpoint: Endpoint) -> None:
        """Ask ``endpoint`` for its key, port and interval (default route, then the backup path)."""
        url = endpoint.base + OFFER_PATH
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        interfaces = [""]
        backup = self.backup_interface() if SO_BINDTODEVICE is not None else ""
        if backup and endpoint.via_backup:
            interfaces.append(backup)
        answer = None
        for interface in interfaces:
            try:
                answer = await self.transport.post(url, b"{}", headers, interface)
            except RetryableDelivery:
                continue
            break
        now = self.clock.monotonic()
        if answer is None:
            endpoint.failures += 1
            first, longest = OFFER_RETRY
            endpoint.next_offer = now + min(longest, first * 2 ** (endpoint.failures - 1))
            return
        if answer.status != 200:
            endpoint.failures = 0
            endpoint.next_offer = now + (UNSUPPORTED_RETRY if answer.status in (404, 405) else OFFER_RETRY[1])
            if endpoint.key or answer.status not in (404, 405):
                log.warning("heartbeats to %s refused: HTTP %d", endpoint.base, answer.status)
            endpoint.key = b""
            return
        try:
            key, port, interval = parse_offer(answer.body)
        except ValueError as exc:
            log.warning("heartbeats to %s: unusable answer (%s)", endpoint.base, exc)
            endpoint.next_offer = now + UNSUPPORTED_RETRY
            return
        address = await self._resolve(endpoint.base, port)
        if address is None and endpoint.address is not None and endpoint.port == port:
            address = endpoint.address  # the resolver is down with the primary path: keep what worked
        if not endpoint.key:
            log.info(
                "heartbeats to %s on udp port %d every %gs",
                endpoint.base,
                port,
                self.config.interval or interval,
            )
        endpoint.key, endpoint.port, endpoint.interval, endpoint.address = key, port, interval, address
        endpoint.failures = 0
        endpoint.next_offer = now + OFFER_REFRESH

    @staticmethod
    async def _resolve(base: str, port: int) -> tuple[int, tuple[str, int]] | None:
        host = urlsplit(base).hostname or ""
        numeric = numeric_address(host, socket.AF_UNSPEC)
        if numeric is not None:
            return numeric[0], (numeric[1], port)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError:
            return None
        for family, _type, _proto, _name, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                return family, (str(sockaddr[0]), int(sockaddr[1]))
        return None


def parse_offer(body: bytes) -> tuple[bytes, int, float]:
    """(key, port, interval) from ``POST /api/v1/heartbeat``'s answer; ValueError names what is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    try:
        key = base64.b64decode(str(data.get("key", "")), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("key is not base64") from None
    port, interval = data.get("port"), data.get("interval")
    if len(key) < 16:
        raise ValueError("key shorter than 16 bytes")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"port must be 1..65535 (got {port!r})")
    if not isinstance(interval, int | float) or isinstance(interval, bool) or not 0.05 <= interval <= 10:
        raise ValueError(f"interval must be 0.05..10 seconds (got {interval!r})")
    return key, port, float(interval)


__all__ = ["OFFER_PATH", "Sender", "digest_of", "parse_offer"]


class LatestDigest:
    """The latest assessment as a beat carries it, converted once per assessment (beats are frequent).

    None before the first assessment: nothing to say yet."""

    def __init__(self, last: Callable[[], Assessment | None]) -> None:
        self._last = last
        self._digest: tuple[Assessment, BeatDigest] | None = None

    def __call__(self) -> BeatDigest | None:
        assessment = self._last()
        if assessment is None:
            return None
        if self._digest is None or self._digest[0] is not assessment:
            self._digest = (assessment, digest_of(assessment))
        return self._digest[1]


def sender_for(
    config: AgentConfig,
    boot_id: str,
    token: str,
    shipper: Shipper,
    clock: Clock,
    last: Callable[[], Assessment | None],
) -> Sender | None:
    """The heartbeat sender over the shipper's paths, or None when beats are off or nowhere to go.

    ``last`` is the health model's latest assessment; the shipper's path hints say when the home
    side or the tunnel is down, and the fallback paths then beat at the full rate."""
    if not config.heartbeat.enabled or not shipper.paths.bases:
        return None
    public = {ep.url for ep in config.collector.endpoints if ep.public}
    via_backup = {ep.url: ep.via_backup for ep in config.collector.endpoints}
    paths = shipper.paths
    return Sender(
        config.heartbeat,
        config.agent.id,
        boot_id,
        token,
        [(base, base in public, via_backup.get(base, True)) for base in paths.bases],
        shipper.transport,
        clock,
        LatestDigest(last),
        backup_interface=paths.backup_interface,
        escalated=lambda: paths.primary_down or paths.tunnel_down,
    )
