"""Receives agents' heartbeats (UDP) and keeps each agent's "last heard" fields in the fleet view.

Keys: every agent's beats are authenticated with ``agent_key(master, agent id, token hash)``. The
master secret lives in a file outside the database (``heartbeat.secret_file``, created 0600 next to
the store at first start), so a stolen database — which holds token hashes — cannot forge beats,
and a new or revoked token changes or removes the key. The agent fetches its key over its
authenticated HTTPS channel (``POST /api/v1/heartbeat``) and keeps it in memory only.

The receiver runs in a thread of its own with a blocking socket, so a beat costs the ingest event
loop nothing but the GIL it briefly shares. Per datagram, cheapest check first: a per-source rate
limit, the frame and agent id, the agent's key, the MAC (constant time), the fields, the send time
and the replay window; each outcome is counted (``lifeline_heartbeats_total{result}``).

Over 500 lines on purpose: key derivation, the per-datagram checks and the socket are one seam.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from lifeline_collector.clock import Clock
from lifeline_collector.fleet import Fleet
from lifeline_collector.store import AgentRow
from lifeline_wire import BeatDigest
from lifeline_wire.heartbeat import (
    BEAT_VERSION,
    HEADER_SIZE,
    KEY_SIZE,
    MAC_SIZE,
    MAGIC,
    MAX_SIZE,
    MIN_SIZE,
    PATHS,
    BeatError,
    decode,
    mac,
    peek_agent,
)
from lifeline_wire.tomlcfg import ConfigError, Section

log = logging.getLogger(__name__)

RESULTS: Final = ("ok", "malformed", "unknown_agent", "bad_mac", "stale", "replay", "rate_limited")
KEY_CONTEXT: Final = b"lifeline heartbeat key v1\0"
SECRET_SUFFIX: Final = ".heartbeat-secret"  # noqa: S105 - a file name, not a secret
RETIRED_BOOTS: Final = 4  # older boots of one agent remembered (their beats are replays)
# A beat after a gap this long (or the first since start) is reported through ``on_heard``: far
# shorter than any silence threshold, and at most one call per agent a second however it beats.
HEARD_GAP: Final = 1.0
RECEIVE_BUFFER: Final = 4 * 1024 * 1024  # ~40,000 beats: a GIL pause of a second loses nothing
_PREFIX: Final = MAGIC + bytes((BEAT_VERSION,))
_ID_START: Final = HEADER_SIZE + 1
_COUNTER_SENT: Final = struct.Struct("!QQ")  # at offset 5, as lifeline_wire.heartbeat lays it out
SO_RCVBUFFORCE: Final = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; typeshed lacks it
MAX_SOURCES: Final = 100_000  # distinct rejected source addresses tracked per second


@dataclass(frozen=True, slots=True)
class HeartbeatConfig:
    enabled: bool = True
    listen: str = ""  # "host:port" over UDP; "" = as ``default_listen`` says
    secret_file: str = ""  # "" = next to the store (``<store path>.heartbeat-secret``)
    interval: float = 0.25  # the beat interval agents are told to use (unless they set their own)
    max_clock_skew: float = 60.0  # a beat sent further than this from now (agent clock) is stale
    # Rejected datagrams a second one source address may send before the rest of that second's
    # datagrams from it are dropped unexamined. Valid beats never count: many agents may share
    # one address (a NAT, a VPN concentrator that translates), and their beats must all pass.
    source_rejects: int = 100


def listen_address(listen: str, split_listen: Callable[[str], tuple[str, int]]) -> tuple[str, int]:
    """``host:port`` as a bind address; port 0 (any free port: tests, several collectors) is allowed."""
    head, _, port = listen.rpartition(":")
    if port == "0":
        return split_listen(head + ":1")[0], 0
    return split_listen(listen)


def default_listen(server_listen: str, split_listen: Callable[[str], tuple[str, int]]) -> str:
    """Where beats are received unless ``[heartbeat] listen`` says: the HTTP listener's host and
    port number — or every address, when HTTP listens on loopback only. That is the deployment
    behind a TLS reverse proxy, and a proxy does not forward UDP: agents send their beats to the
    proxy's host, so the collector (on that host) must hear them there."""
    try:
        host, port = split_listen(server_listen)
    except ValueError:
        return ""  # [server] listen reports its own error
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    return f"0.0.0.0:{port}" if loopback else server_listen


def read_heartbeat(
    section: Section, split_listen: Callable[[str], tuple[str, int]], server_listen: str = ""
) -> HeartbeatConfig:
    """Read the ``[heartbeat]`` table; problems go to the section's collector with their path."""
    default = HeartbeatConfig()
    enabled = section.flag("enabled", default.enabled)
    listen = section.text("listen", default.listen)
    if listen:
        try:
            listen_address(listen, split_listen)
        except ValueError as exc:
            section.error("listen", str(exc))
    elif server_listen:
        listen = default_listen(server_listen, split_listen)
    secret_file = section.text("secret_file", default.secret_file)
    interval = section.duration("interval", default.interval, min=0.05, max=10.0)
    skew = section.duration("max_clock_skew", default.max_clock_skew, min=1.0, max=86400.0)
    rejects = section.integer("source_rejects", default.source_rejects, min=1, max=1_000_000)
    section.finish()
    return HeartbeatConfig(enabled, listen, secret_file, interval, skew, rejects)


def secret_path(config: HeartbeatConfig, store_path: str) -> str:
    """Where the master secret lives ("" for an in-memory store: the secret lives as long as it)."""
    if config.secret_file:
        return config.secret_file
    if store_path == ":memory:" or not store_path:
        return ""
    return str(Path(store_path).with_name(Path(store_path).name + SECRET_SUFFIX))


def load_master_secret(path: str) -> bytes:
    """The collector's master secret from ``path``, created (0600, random) if the file is missing.

    Raises OSError if it cannot be read or created, ValueError if the file holds no usable secret."""
    if not path:
        return secrets.token_bytes(KEY_SIZE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(KEY_SIZE) + "\n")
        log.info("created the heartbeat secret %s", path)
    if os.stat(path).st_mode & 0o077:
        log.warning("heartbeat secret %s is readable by others: chmod 600 it", path)
    text = Path(path).read_text(encoding="ascii").strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"heartbeat secret {path} must hold hex digits") from None
    if len(secret) < 16:
        raise ValueError(f"heartbeat secret {path} must hold at least 16 bytes (32 hex digits)")
    return secret


def agent_key(master: bytes, agent_id: str, token_hash: str) -> bytes:
    """The agent's heartbeat key: bound to its current token, so a new or revoked token changes it."""
    message = KEY_CONTEXT + agent_id.encode() + b"\0" + token_hash.encode()
    return hmac.digest(master, message, hashlib.sha256)


class _Agent:
    """One agent as the receiver knows it: key, replay state, and the last digest it decoded."""

    __slots__ = (
        "boot",
        "counters",
        "digest",
        "id",
        "interval",
        "key",
        "last_sent_ms",
        "retired",
        "sig",
        "sig_boot",
        "signing_off",
    )

    def __init__(self, agent_id: str, key: bytes) -> None:
        self.id = agent_id
        self.key = key
        # The bytes of the last beat that are not counter, send time or path (boot id, digest,
        # interval) and what they decoded to: a steady agent's beats are checked, not re-parsed.
        self.sig = b""
        self.sig_boot = ""
        self.digest: BeatDigest | None = None
        self.interval = 0.0
        self.signing_off = False
        self.boot = ""  # the current boot ("" until the first valid beat)
        self.counters: dict[str, int] = {}  # path -> newest counter of this boot
        self.last_sent_ms = 0
        self.retired: tuple[str, ...] = ()  # earlier boots: their beats are replays


class BeatReceiver:
    """Judges one datagram at a time and applies the valid ones to the fleet view.

    Thread-safe against the event loop by construction: it only replaces whole fields of an
    ``AgentView`` (and whole dicts), and reads ``fleet.agents``, which the loop edits one key at a
    time; the key table is replaced whole."""

    def __init__(
        self,
        fleet: Fleet,
        clock: Clock,
        on_heard: Callable[[str], None] | None = None,
        *,
        max_clock_skew: float = 60.0,
        source_rejects: int = 100,
        heard_gap: float = HEARD_GAP,
    ) -> None:
        self.fleet = fleet
        self.clock = clock
        self.on_heard = on_heard
        self.max_skew_ms = max_clock_skew * 1000
        self.source_rejects = source_rejects
        self.heard_gap = heard_gap
        self.counts: dict[str, int] = dict.fromkeys(RESULTS, 0)
        self.paths: dict[str, int] = dict.fromkeys(PATHS, 0)  # valid beats by the path they took
        self._agents: dict[bytes, _Agent] = {}  # by the agent id's bytes, as the datagram holds it
        self._window = 0  # the current second of the clock
        self._rejects: dict[str, int] = {}  # source address -> datagrams rejected this second
        # Agents with a valid beat since ``take_changed`` (None: nobody asks, nothing is kept).
        # Collectors sharing one PostgreSQL publish those beats (lifeline_collector.replica).
        self.changed: set[str] | None = None

    @property
    def keys(self) -> dict[str, bytes]:
        return {agent.id: agent.key for agent in self._agents.values()}

    def set_keys(self, keys: Mapping[str, bytes]) -> None:
        """Replace the key table (the registry changed). An agent whose key is unchanged keeps its
        replay state; a new key (a new token) starts afresh; agents that left are forgotten."""
        known = self._agents
        table: dict[bytes, _Agent] = {}
        for agent_id, key in keys.items():
            ident = agent_id.encode()
            agent = known.get(ident)
            table[ident] = agent if agent is not None and agent.key == key else _Agent(agent_id, key)
        self._agents = table

    def take_changed(self) -> set[str]:
        """The agents beating since the last call (swapped whole: the receiver thread adds to the
        new set from then on)."""
        changed = self.changed
        if changed is None:
            return set()
        self.changed = set()
        return changed

    def last_sent(self, agent_id: str) -> tuple[str, int] | None:
        """(boot, agent-clock send time) of the newest valid beat of ``agent_id`` (None: none yet)."""
        agent = self._agents.get(agent_id.encode())
        if agent is None or not agent.boot:
            return None
        return agent.boot, agent.last_sent_ms

    def add_key(self, agent_id: str, key: bytes) -> None:
        """Learn one agent's key (it just asked for it, possibly before the registry sync)."""
        ident = agent_id.encode()
        agent = self._agents.get(ident)
        if agent is None or agent.key != key:
            self._agents = {**self._agents, ident: _Agent(agent_id, key)}

    def handle(self, data: bytes, source: str) -> str:
        """Judge and apply one datagram from ``source`` (an address); return the result counted.

        A source that keeps sending what is rejected (a flood, a replay, a misconfigured peer)
        is cut off for the rest of the second, so it cannot spend the receiver's time on MACs."""
        now = self.clock.now()
        window = int(now)
        if window != self._window:
            self._window = window
            self._rejects = {}
        rejects = self._rejects.get(source, 0)
        if rejects >= self.source_rejects:
            result = "rate_limited"
        else:
            result = self._judge(data, now)
            if result != "ok" and (rejects or len(self._rejects) < MAX_SOURCES):
                self._rejects[source] = rejects + 1
        self.counts[result] += 1
        return result

    def _judge(self, data: bytes, now: float) -> str:
        size = len(data)
        if size < MIN_SIZE or size > MAX_SIZE or data[:3] != _PREFIX:
            return "malformed"
        id_end = _ID_START + data[HEADER_SIZE]
        agent = self._agents.get(data[_ID_START:id_end])
        if agent is None:
            try:
                peek_agent(data)
            except BeatError:
                return "malformed"
            return "unknown_agent"
        if not hmac.compare_digest(mac(agent.key, memoryview(data)[:-MAC_SIZE]), data[-MAC_SIZE:]):
            return "bad_mac"
        sig = data[4:5] + data[21:HEADER_SIZE] + data[id_end:-MAC_SIZE]
        if sig != agent.sig:
            try:
                beat = decode(data)
            except BeatError:
                return "malformed"
            agent.sig, agent.sig_boot = sig, beat.boot_id
            agent.digest, agent.interval = beat.digest, beat.interval
            agent.signing_off = beat.signing_off
        boot_id = agent.sig_boot
        path_code = data[3]
        counter, sent_ms = _COUNTER_SENT.unpack_from(data, 5)
        if path_code >= len(PATHS) or sent_ms >= 2**63:
            return "malformed"
        path = PATHS[path_code]
        view = self.fleet.agents.get(agent.id)
        if view is None:
            return "unknown_agent"
        offset_ms = 0.0 if view.clock_offset is None else view.clock_offset * 1000
        if abs(sent_ms - offset_ms - now * 1000) > self.max_skew_ms:
            return "stale"
        if boot_id != agent.boot:
            # A new boot starts after the last beat of the one before; anything else is old.
            if agent.boot and (boot_id in agent.retired or sent_ms <= agent.last_sent_ms):
                return "replay"
            if agent.boot:
                agent.retired = (*agent.retired, agent.boot)[-RETIRED_BOOTS:]
            agent.boot, agent.counters = boot_id, {}
        newest = agent.counters.get(path)
        if newest is not None and counter <= newest:
            return "replay"
        agent.counters[path] = counter
        self.paths[path] += 1
        if sent_ms > agent.last_sent_ms:
            agent.last_sent_ms = sent_ms
        previous = view.last_beat
        paths = view.beat_paths
        if path in paths:
            paths[path] = now
        else:
            view.beat_paths = {**paths, path: now}
        if view.beat is not agent.digest:
            view.beat = agent.digest
        view.beat_interval = agent.interval
        if agent.signing_off:
            if view.signed_off is None:
                view.signed_off = now
        elif view.signed_off is not None:
            view.signed_off = None
        view.last_beat = now
        changed = self.changed
        if changed is not None:
            changed.add(agent.id)
        if self.on_heard is not None and (previous is None or now - previous > self.heard_gap):
            self.on_heard(agent.id)
        return "ok"


class HeartbeatServer:
    """The UDP socket and the thread that feeds ``receiver`` from it."""

    def __init__(self, receiver: BeatReceiver, host: str, port: int) -> None:
        self.receiver = receiver
        self.host = host
        self.port = port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is the real one when 0 was asked for."""
        if self._sock is None:
            return self.host, self.port
        bound = self._sock.getsockname()
        return str(bound[0]), int(bound[1])

    def start(self) -> None:
        """Bind and start receiving; raises OSError if the address cannot be bound."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            # Past net.core.rmem_max (often 208 KiB, ~250 beats) only with CAP_NET_ADMIN: try both.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="heartbeat-receiver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        handle = self.receiver.handle
        receive = sock.recvfrom
        while True:
            try:
                data, source = receive(MAX_SIZE + 1)
            except OSError:
                if self._stopping:
                    return
                continue
            if self._stopping:
                return
            try:
                handle(data, source[0])
            except Exception:  # one bad datagram or callback must not stop every beat
                log.exception("heartbeat from %s not handled", source[0])

    def stop(self) -> None:
        sock, thread = self._sock, self._thread
        if sock is None or thread is None:
            return
        self._stopping = True
        host, port = self.address
        wake_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        with socket.socket(sock.family, socket.SOCK_DGRAM) as waker, contextlib.suppress(OSError):
            waker.sendto(b"", (wake_host, port))
        with contextlib.suppress(OSError):  # Linux wakes a blocked recvfrom (and says ENOTCONN)
            sock.shutdown(socket.SHUT_RDWR)
        thread.join(timeout=2.0)
        sock.close()
        self._sock = self._thread = None


def keys_for(master: bytes, token_hashes: Iterable[tuple[str, str]]) -> dict[str, bytes]:
    """Every active agent's key from its (id, token hash)."""
    return {agent_id: agent_key(master, agent_id, token_hash) for agent_id, token_hash in token_hashes}


@dataclass(frozen=True, slots=True)
class Offer:
    """What an agent is told at ``POST /api/v1/heartbeat``: its key, where to send, how often."""

    key: bytes
    port: int
    interval: float


class Heartbeats:
    """The collector's heartbeat side: master secret, key table, receiver and its socket.

    ``on_heard`` is called from the receiver thread (see :class:`BeatReceiver`)."""

    def __init__(
        self,
        config: HeartbeatConfig,
        listen: tuple[str, int],
        store_path: str,
        fleet: Fleet,
        clock: Clock,
        on_heard: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        path = secret_path(config, store_path)
        try:
            self._master = load_master_secret(path)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError("heartbeat", [("heartbeat.secret_file", f"{path}: {reason}")]) from exc
        self.receiver = BeatReceiver(
            fleet,
            clock,
            on_heard,
            max_clock_skew=config.max_clock_skew,
            source_rejects=config.source_rejects,
        )
        self.fleet = fleet
        self.server: HeartbeatServer | None = None
        self._listen = listen

    def refresh(self, token_hashes: Iterable[tuple[str, str]]) -> None:
        """Follow the registry: keys of new or re-issued tokens, none for revoked agents."""
        self.receiver.set_keys(keys_for(self._master, token_hashes))

    def offer(self, agent: AgentRow, token_hash: str) -> Offer | None:
        """The key and port for an agent that just authenticated (None while heartbeats are off)."""
        if self.server is None:
            return None
        key = agent_key(self._master, agent.id, token_hash)
        self.fleet.ensure(agent)
        self.receiver.add_key(agent.id, key)
        return Offer(key, self.server.address[1], self.config.interval)

    def start(self) -> None:
        if not self.config.enabled:
            return
        host, port = self._listen
        server = HeartbeatServer(self.receiver, host, port)
        try:
            server.start()
        except OSError as exc:
            # Batches still flow and the batch-based silence still works: run on, loudly.
            log.error(
                "heartbeats off: cannot listen on udp %s:%d (%s); silence is detected from batches only",
                host,
                port,
                exc.strerror or exc,
            )
            return
        self.server = server
        log.info("heartbeats: listening on udp %s:%d", *server.address)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
