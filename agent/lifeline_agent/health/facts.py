"""The local facts the health model reads, and the one place that accepts them from the sources.

The sources (``lifeline_agent.sources``) fill these small records, or hand over their own fact
objects: :func:`coerce` reads the same field names (and a few documented aliases) from any object
or mapping, so the two packages stay decoupled. A bad field is dropped with a problem naming it
(``wifi.signal_dbm: must be a number (got 'abc')``) and the rest of the record is kept; nothing
here raises for bad data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SOURCES = ("power", "wifi", "cellular", "vpn", "routes", "interfaces", "cad_sessions")


@dataclass(frozen=True, slots=True)
class PowerFacts:
    on_ac: bool | None = None  # None: the machine cannot tell
    percent: float | None = None  # battery charge 0..100
    secs_left: float | None = None  # battery time left; None when unknown or on AC


@dataclass(frozen=True, slots=True)
class WifiFacts:
    interface: str = ""
    connected: bool = True  # associated to an access point
    signal_dbm: float | None = None
    bitrate: float | None = None  # bits per second
    path: str = "primary"  # "backup" when this Wi-Fi is the hotspot (a MiFi)


@dataclass(frozen=True, slots=True)
class CellularFacts:
    modem: str = ""
    connected: bool | None = None
    access_technology: str = ""
    rsrp: float | None = None  # dBm
    rsrq: float | None = None  # dB
    sinr: float | None = None  # dB
    quality: float | None = None  # 0..1


@dataclass(frozen=True, slots=True)
class VpnFacts:
    # False when the laptop has no tunnel interface: the home-VPN-router variant, where the tunnel
    # is judged from what is reachable.
    present: bool = True
    interface: str = ""
    kind: str = ""  # wireguard, openvpn, tun, ppp …
    up: bool | None = None
    handshake_age: float | None = None  # seconds; math.inf = never; None = not applicable
    # Bytes received from and sent to the peer (WireGuard, OpenVPN): received bytes that stop
    # growing while sent bytes grow say nothing comes back through the tunnel. None: not exposed.
    rx_bytes: float | None = None
    tx_bytes: float | None = None


@dataclass(frozen=True, slots=True)
class RouteFacts:
    primary_interface: str = ""
    primary_up: bool | None = None  # carrier and admin state of the primary interface
    backup_interface: str = ""
    backup_up: bool | None = None
    on_backup: bool = False  # the route to CAD runs over the backup interface right now


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """The dispatcher's own CAD sessions (TCP_INFO): how they are doing right now."""

    sessions: float = 0  # established sessions to CAD
    stalled: float = 0  # the most retransmissions in a row of one segment (reset by an ACK)
    since_ack: float | None = None  # longest wait for an ACK of a session with data in flight, s


Facts = PowerFacts | WifiFacts | CellularFacts | VpnFacts | RouteFacts | SessionFacts

# field -> (kind, aliases the sources may use)
_FIELDS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "power": {
        "on_ac": ("flag", ("power_plugged", "plugged", "ac")),
        "percent": ("number", ("battery_percent",)),
        "secs_left": ("number", ("secsleft", "seconds_left", "time_left")),
    },
    "wifi": {
        "interface": ("text", ()),
        "connected": ("flag", ("associated",)),
        "signal_dbm": ("number", ("signal", "rssi", "rssi_dbm")),
        "bitrate": ("number", ("tx_bitrate", "bitrate_bps")),
        "path": ("text", ()),
    },
    "cellular": {
        "modem": ("text", ("name",)),
        "connected": ("flag", ()),
        "access_technology": ("text", ("technology", "access_tech")),
        "rsrp": ("number", ("rsrp_dbm",)),
        "rsrq": ("number", ("rsrq_db",)),
        "sinr": ("number", ("sinr_db", "snr")),
        "quality": ("number", ("signal_quality",)),
    },
    "vpn": {
        "present": ("flag", ("found",)),
        "interface": ("text", ()),
        "kind": ("text", ("vpn_type", "type")),
        "up": ("flag", ()),
        "handshake_age": ("number", ("handshake_age_seconds", "latest_handshake_age")),
        "rx_bytes": ("number", ()),
        "tx_bytes": ("number", ()),
    },
    "routes": {
        "primary_interface": ("text", ()),
        "primary_up": ("flag", ()),
        "backup_interface": ("text", ()),
        "backup_up": ("flag", ()),
        "on_backup": ("flag", ()),
    },
}
_FIELDS["interfaces"] = _FIELDS["routes"]
_FIELDS["cad_sessions"] = {
    "sessions": ("number", ()),
    "stalled": ("number", ()),
    "since_ack": ("number", ()),
}

_TYPES: dict[str, type[Facts]] = {
    "power": PowerFacts,
    "wifi": WifiFacts,
    "cellular": CellularFacts,
    "vpn": VpnFacts,
    "routes": RouteFacts,
    "interfaces": RouteFacts,
    "cad_sessions": SessionFacts,
}


def coerce(source: str, facts: object) -> tuple[Facts | None, tuple[str, ...]]:
    """Turn what a source handed over into one of the records above, plus the problems found.

    Returns ``(None, problems)`` for an unknown source name or a value that is not a record.
    """
    fields = _FIELDS.get(source)
    if fields is None:
        return None, (f"{source}: unknown facts source (known: {', '.join(SOURCES)})",)
    wanted = _TYPES[source]
    if isinstance(facts, wanted):
        return facts, ()
    if source == "vpn" and _has(facts, "tunnels"):
        return _from_tunnels(facts)
    if source == "interfaces" and _has(facts, "interfaces"):
        return _from_interfaces(facts)
    if source == "cad_sessions" and _has(facts, "targets"):
        return _from_sessions(facts)
    if facts is None or isinstance(facts, str | bytes | int | float):
        return None, (f"{source}: expected a record of facts (got {type(facts).__name__})",)
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, (kind, aliases) in fields.items():
        present, raw = _lookup(facts, (name, *aliases))
        if not present or raw is None:
            continue
        value, problem = _convert(kind, raw)
        if problem:
            problems.append(f"{source}.{name}: {problem}")
        else:
            values[name] = value
    return wanted(**values), tuple(problems)


def _lookup(obj: object, names: tuple[str, ...]) -> tuple[bool, object]:
    for name in names:
        if isinstance(obj, Mapping):
            if name in obj:
                return True, obj[name]
        elif hasattr(obj, name):
            return True, getattr(obj, name)
    return False, None


def _convert(kind: str, raw: object) -> tuple[object, str]:
    if kind == "flag":
        if isinstance(raw, bool):
            return raw, ""
        return None, f"must be true or false (got {raw!r})"
    if kind == "number":
        if raw == "+Inf":
            return math.inf, ""
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return None, f"must be a number (got {raw!r})"
        if math.isnan(raw):
            return None, "must be a number (got NaN)"
        return float(raw), ""
    if isinstance(raw, str):
        return raw, ""
    return None, f"must be a string (got {raw!r})"


def _has(obj: object, name: str) -> bool:
    return name in obj if isinstance(obj, Mapping) else hasattr(obj, name)


def _items(obj: object, name: str) -> list[object]:
    _, value = _lookup(obj, (name,))
    return list(value) if isinstance(value, list | tuple) else []


def _from_tunnels(state: object) -> tuple[Facts | None, tuple[str, ...]]:
    """The VPN source's list of tunnels: none means the laptop has no VPN of its own.

    With several tunnels the one that is up is the dispatch tunnel; a tunnel whose VPN stack
    could not be read (``up`` None) is judged by its interface's link state.
    """
    tunnels = _items(state, "tunnels")
    if not tunnels:
        return VpnFacts(present=False), ()
    chosen = next((t for t in tunnels if _lookup(t, ("up",))[1] is True), tunnels[0])
    record, problems = coerce("vpn", chosen)
    if not isinstance(record, VpnFacts):
        return None, problems
    link_up = _lookup(chosen, ("link_up",))[1]
    up = record.up
    if link_up is False:
        up = False
    elif up is None and isinstance(link_up, bool):
        up = link_up
    return (
        VpnFacts(
            True, record.interface, record.kind, up, record.handshake_age, record.rx_bytes, record.tx_bytes
        ),
        problems,
    )


def _from_sessions(state: object) -> tuple[Facts | None, tuple[str, ...]]:
    """The CAD sessions source's per-target facts, taken together: the worst session counts."""
    sessions = stalled = 0
    waits: list[float] = []
    problems: list[str] = []
    for index, item in enumerate(_items(state, "targets")):
        record, found = coerce("cad_sessions", {k: _lookup(item, (k,))[1] for k in _FIELDS["cad_sessions"]})
        problems += [f"targets[{index}].{p.partition('.')[2]}" for p in found]
        if isinstance(record, SessionFacts):
            sessions += int(record.sessions)
            stalled = max(stalled, int(record.stalled))
            if record.since_ack is not None:
                waits.append(record.since_ack)
    return SessionFacts(sessions, stalled, max(waits, default=None)), tuple(problems)


def _from_interfaces(state: object) -> tuple[Facts | None, tuple[str, ...]]:
    """The interfaces source's list: the primary path is up if any of its interfaces is."""
    by_path: dict[str, list[tuple[str, bool]]] = {}
    problems: list[str] = []
    for index, item in enumerate(_items(state, "interfaces")):
        name, path = _lookup(item, ("name",))[1], _lookup(item, ("path",))[1]
        present, up = _lookup(item, ("present",))[1], _lookup(item, ("up",))[1]
        if not isinstance(name, str) or not isinstance(path, str) or not isinstance(up, bool):
            problems.append(f"interfaces[{index}]: needs name, path and up (got {item!r})")
            continue
        by_path.setdefault(path, []).append((name, up and present is not False))
    primary, backup = by_path.get("primary", []), by_path.get("backup", [])

    def pick(entries: list[tuple[str, bool]]) -> tuple[str, bool | None]:
        if not entries:
            return "", None
        working = [name for name, up in entries if up]
        return (working[0], True) if working else (entries[0][0], False)

    primary_name, primary_up = pick(primary)
    backup_name, backup_up = pick(backup)
    return RouteFacts(primary_name, primary_up, backup_name, backup_up), tuple(problems)
