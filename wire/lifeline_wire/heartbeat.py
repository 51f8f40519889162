"""The heartbeat: a small authenticated UDP datagram an agent sends several times a second.

Batches ride TCP, which stalls under loss, so "no batch for a few seconds" is not "cut off". A
beat is one datagram: it sees the path the way CAD's packets do, costs the collector a
``recvfrom`` and an HMAC, and carries just enough to say what the position knew when it was last
heard (``BeatDigest``). It never carries a token: it is authenticated with a per-agent key the
agent fetched over its authenticated HTTPS channel (see ``docs/decisions/heartbeat.md``).

Layout (network byte order), version 1::

    offset size
         0    2  magic b"LB"
         2    1  version (1)
         3    1  path: 0 tunnel, 1 backup, 2 public
         4    1  flags: bit 0 on_backup, bit 1 backup readiness known, bit 2 backup ready,
                 bit 3 signing off (the agent stops on purpose: its last beats)
         5    8  counter (per boot, grows with every datagram the agent sends)
        13    8  send time, Unix milliseconds (agent clock)
        21    4  announced beat interval, milliseconds
        25    2  risk, 0..10000 (1/10000 units)
        27    4  time to loss, milliseconds (0xFFFFFFFF: unknown / no loss predicted)
        31    1  state of the verdict's layer: 0 ok, 1 degraded, 2 failed
        32    1+n agent id (length, ASCII; the batch contract's identifier pattern)
         .    1+n boot id (same rules)
         .    1+n verdict layer (length, lowercase ASCII name; "none" when healthy)
     end-16  16  HMAC-SHA256 of everything before it, truncated to 128 bits

A collector reads the agent id first (:func:`peek_agent`) to find the key, checks the MAC in
constant time (:func:`verify`) and only then decodes the rest (:func:`decode`).
"""

from __future__ import annotations

import hmac
import math
import re
import struct
from dataclasses import dataclass
from typing import Final

from lifeline_wire.schema import ID_RE, WireError

MAGIC: Final = b"LB"
BEAT_VERSION: Final = 1
MAC_SIZE: Final = 16  # 128 bits: forging needs ~2^128 tries, each a datagram the collector counts
KEY_SIZE: Final = 32
PATHS: Final = ("tunnel", "backup", "public")
STATES: Final = ("ok", "degraded", "failed")
MAX_LAYER_LENGTH: Final = 32
NO_TIME_TO_LOSS: Final = 0xFFFF_FFFF
RISK_SCALE: Final = 10_000

_HEADER: Final = struct.Struct("!2sBBBQQIHIB")
_COUNTER_SENT: Final = struct.Struct("!QQ")  # at offset 5
_ID: Final = re.compile(ID_RE)
_LAYER: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_ON_BACKUP: Final = 0x01
_BACKUP_KNOWN: Final = 0x02
_BACKUP_READY: Final = 0x04
_SIGNING_OFF: Final = 0x08
_FLAG_BITS: Final = _ON_BACKUP | _BACKUP_KNOWN | _BACKUP_READY | _SIGNING_OFF
HEADER_SIZE: Final = _HEADER.size  # the agent id's length byte follows the fixed header
MIN_SIZE: Final = _HEADER.size + 3 + MAC_SIZE
# Three identifiers of at most 64 bytes each: anything longer is not a beat.
MAX_SIZE: Final = _HEADER.size + 3 * (1 + 64) + MAC_SIZE


class BeatError(WireError):
    """A datagram that is not a well-formed beat. ``path`` names the field (``beat.agent_id``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"beat.{field}", reason)
        self.field = field


@dataclass(frozen=True, slots=True)
class BeatDigest:
    """What the agent knew when it sent the beat: enough for a page's sentence, never more."""

    layer: str  # the verdict's layer from the agent's layer vocabulary ("none" when healthy)
    state: str  # "ok" | "degraded" | "failed" (state of that layer / overall)
    risk: float  # 0..1, the agent's CAD risk
    time_to_loss: float | None  # seconds; None when unknown / no loss predicted
    backup_ready: bool | None  # None = unknown (no backup path configured / not measured)
    on_backup: bool  # the agent reaches the collector/CAD over the backup path now


HEALTHY: Final = BeatDigest("none", "ok", 0.0, None, None, False)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    agent_id: str
    boot_id: str
    counter: int
    sent_ms: int  # Unix milliseconds, agent clock
    path: str  # one of PATHS: the way the agent sent this datagram
    interval: float  # seconds between beats the agent announces
    digest: BeatDigest
    # The agent is stopping on purpose (shut down, restarted, upgraded): a position that signs off
    # has not gone dark, and its silence until the next beat pages nobody.
    signing_off: bool = False


def mac(key: bytes, signed: bytes | bytearray | memoryview) -> bytes:
    """The truncated HMAC-SHA256 of ``signed`` (the digest named by string: OpenSSL's one-shot path)."""
    return hmac.digest(key, signed, "sha256")[:MAC_SIZE]


def _ident(value: str, field: str) -> bytes:
    raw = value.encode("ascii", "replace")
    if _ID.match(value) is None or not value.isascii():
        raise BeatError(field, f"must match {ID_RE!r} (got {value!r})")
    return bytes((len(raw),)) + raw


def encode(beat: Heartbeat, key: bytes) -> bytes:
    """The datagram for ``beat``, authenticated with ``key``; raises BeatError for a bad field."""
    digest = beat.digest
    try:
        path = PATHS.index(beat.path)
    except ValueError:
        raise BeatError("path", f"must be one of {', '.join(PATHS)} (got {beat.path!r})") from None
    try:
        state = STATES.index(digest.state)
    except ValueError:
        raise BeatError("state", f"must be one of {', '.join(STATES)} (got {digest.state!r})") from None
    if _LAYER.match(digest.layer) is None:
        raise BeatError("layer", f"must be a lowercase layer name (got {digest.layer!r})")
    if not 0 <= beat.counter < 2**64:
        raise BeatError("counter", f"must be in 0..2^64-1 (got {beat.counter})")
    if not 0 <= beat.sent_ms < 2**63:
        raise BeatError("sent_ms", f"must be a Unix time in milliseconds (got {beat.sent_ms})")
    interval_ms = _finite_ms(beat.interval, "interval")
    if not 0 < interval_ms < NO_TIME_TO_LOSS:
        raise BeatError("interval", f"must be a positive duration (got {beat.interval!r})")
    risk = digest.risk if math.isfinite(digest.risk) else 1.0
    ttl = NO_TIME_TO_LOSS
    if digest.time_to_loss is not None and math.isfinite(digest.time_to_loss):
        ttl = min(max(_finite_ms(digest.time_to_loss, "time_to_loss"), 0), NO_TIME_TO_LOSS - 1)
    flags = _ON_BACKUP if digest.on_backup else 0
    if beat.signing_off:
        flags |= _SIGNING_OFF
    if digest.backup_ready is not None:
        flags |= _BACKUP_KNOWN | (_BACKUP_READY if digest.backup_ready else 0)
    layer = digest.layer.encode()
    signed = b"".join(
        (
            _HEADER.pack(
                MAGIC,
                BEAT_VERSION,
                path,
                flags,
                beat.counter,
                beat.sent_ms,
                interval_ms,
                round(min(max(risk, 0.0), 1.0) * RISK_SCALE),
                ttl,
                state,
            ),
            _ident(beat.agent_id, "agent_id"),
            _ident(beat.boot_id, "boot_id"),
            bytes((len(layer),)),
            layer,
        )
    )
    return signed + mac(key, signed)


def stamp(frame: bytearray, counter: int, sent_ms: int, key: bytes) -> bytes:
    """A sealed datagram from ``frame`` (what :func:`encode` made, without its MAC) with a new
    counter and send time: what a sender does each beat while the rest stays the same."""
    _COUNTER_SENT.pack_into(frame, 5, counter, sent_ms)
    return bytes(frame) + mac(key, frame)


def _finite_ms(seconds: float, field: str) -> int:
    if not math.isfinite(seconds):
        raise BeatError(field, f"must be a finite number of seconds (got {seconds!r})")
    return round(seconds * 1000)


def _check_frame(data: bytes) -> None:
    if not MIN_SIZE <= len(data) <= MAX_SIZE:
        raise BeatError("length", f"a beat is {MIN_SIZE}..{MAX_SIZE} bytes (got {len(data)})")
    if data[:2] != MAGIC:
        raise BeatError("magic", "not a Lifeline heartbeat")
    if data[2] != BEAT_VERSION:
        raise BeatError(
            "version", f"unsupported heartbeat version {data[2]} (this end speaks {BEAT_VERSION})"
        )


def _text(data: bytes, offset: int, field: str, pattern: re.Pattern[str]) -> tuple[str, int]:
    end = len(data) - MAC_SIZE
    if offset >= end:
        raise BeatError(field, "missing")
    size = data[offset]
    stop = offset + 1 + size
    if size == 0 or stop > end:
        raise BeatError(field, f"length {size} runs past the end of the datagram")
    raw = data[offset + 1 : stop]
    if not raw.isascii():
        raise BeatError(field, "must be ASCII")
    text = raw.decode("ascii")
    if pattern.match(text) is None:
        raise BeatError(field, f"must match {pattern.pattern!r}")
    return text, stop


def peek_agent(data: bytes) -> str:
    """The agent id a datagram claims (not yet authenticated); BeatError if it is not a beat."""
    _check_frame(data)
    return _text(data, _HEADER.size, "agent_id", _ID)[0]


def verify(data: bytes, key: bytes) -> bool:
    """True when the datagram's MAC is ``key``'s (compared in constant time)."""
    if len(data) < MIN_SIZE:
        return False
    return hmac.compare_digest(mac(key, memoryview(data)[:-MAC_SIZE]), data[-MAC_SIZE:])


def decode(data: bytes) -> Heartbeat:
    """Parse a datagram (call :func:`verify` first: this does not check the MAC)."""
    _check_frame(data)
    _magic, _version, path, flags, counter, sent_ms, interval_ms, risk, ttl, state = _HEADER.unpack_from(data)
    if path >= len(PATHS):
        raise BeatError("path", f"unknown path code {path}")
    if flags & ~_FLAG_BITS:
        raise BeatError("flags", f"unknown flag bits {flags & ~_FLAG_BITS:#x}")
    if state >= len(STATES):
        raise BeatError("state", f"unknown state code {state}")
    if risk > RISK_SCALE:
        raise BeatError("risk", f"must be 0..{RISK_SCALE} (got {risk})")
    if interval_ms == 0:
        raise BeatError("interval", "must be positive")
    if sent_ms >= 2**63:
        raise BeatError("sent_ms", "out of range")
    agent_id, offset = _text(data, _HEADER.size, "agent_id", _ID)
    boot_id, offset = _text(data, offset, "boot_id", _ID)
    layer, offset = _text(data, offset, "layer", _LAYER)
    if offset != len(data) - MAC_SIZE:
        raise BeatError("length", f"{len(data) - MAC_SIZE - offset} unexpected byte(s) before the MAC")
    backup_ready = bool(flags & _BACKUP_READY) if flags & _BACKUP_KNOWN else None
    digest = BeatDigest(
        layer,
        STATES[state],
        risk / RISK_SCALE,
        None if ttl == NO_TIME_TO_LOSS else ttl / 1000,
        backup_ready,
        bool(flags & _ON_BACKUP),
    )
    return Heartbeat(
        agent_id,
        boot_id,
        counter,
        sent_ms,
        PATHS[path],
        interval_ms / 1000,
        digest,
        signing_off=bool(flags & _SIGNING_OFF),
    )
