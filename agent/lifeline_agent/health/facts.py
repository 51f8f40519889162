"""The local facts the health model reads, and the one place that accepts them from the sources.

Power, Wi-Fi and cellular facts are the records their source builds (``sources.power.PowerFacts``,
``sources.wifi.WifiFacts``, ``sources.cellular.CellularFacts``): one record per fact, so a field
renamed in a source is a type error in the model, never a value that silently reads as None. The
VPN, link and CAD-session facts are summaries the model draws from the sources' typed states
(:func:`vpn_summary`, :func:`link_summary`, :func:`route_summary`, :func:`session_summary`).

A mapping (a test, a recorded fixture) is read by the record's own field names. A bad or unknown
field is dropped with a problem naming it (``wifi.signal_dbm: must be a number (got 'abc')``) and
the rest of the record is kept; nothing here raises for bad data.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lifeline_agent.sources.cad_sessions import CadSessionsState
from lifeline_agent.sources.cellular import CellularFacts
from lifeline_agent.sources.interfaces import InterfacesState
from lifeline_agent.sources.power import PowerFacts
from lifeline_agent.sources.routes import RoutesState
from lifeline_agent.sources.vpn import VpnState
from lifeline_agent.sources.wifi import WifiFacts

SOURCES = ("power", "wifi", "cellular", "vpn", "routes", "interfaces", "cad_sessions")


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

_TYPES: dict[str, type[Facts]] = {
    "power": PowerFacts,
    "wifi": WifiFacts,
    "cellular": CellularFacts,
    "vpn": VpnFacts,
    "routes": RouteFacts,
    "interfaces": RouteFacts,
    "cad_sessions": SessionFacts,
}


def vpn_summary(state: VpnState) -> VpnFacts:
    """The VPN source's tunnels as the model sees them: none means the laptop has no VPN of its own.

    With several tunnels the one that is up is the dispatch tunnel; a tunnel whose VPN stack could
    not be read (``up`` None) is judged by its interface's link state.
    """
    if not state.tunnels:
        return VpnFacts(present=False)
    chosen = next((t for t in state.tunnels if t.up is True), state.tunnels[0])
    up = chosen.up
    if chosen.link_up is False:
        up = False
    elif up is None:
        up = chosen.link_up
    return VpnFacts(
        True,
        chosen.interface,
        chosen.vpn_type,
        up,
        _number(chosen.handshake_age),
        _number(chosen.rx_bytes),
        _number(chosen.tx_bytes),
    )


def link_summary(state: InterfacesState) -> RouteFacts:
    """The interfaces source's list: a path is up if any of its interfaces is."""
    by_path: dict[str, list[tuple[str, bool]]] = {}
    for item in state.interfaces:
        by_path.setdefault(item.path, []).append((item.name, item.up and item.present))

    def pick(entries: list[tuple[str, bool]]) -> tuple[str, bool | None]:
        if not entries:
            return "", None
        working = [name for name, up in entries if up]
        return (working[0], True) if working else (entries[0][0], False)

    primary_name, primary_up = pick(by_path.get("primary", []))
    backup_name, backup_up = pick(by_path.get("backup", []))
    return RouteFacts(primary_name, primary_up, backup_name, backup_up)


def route_summary(state: RoutesState) -> RouteFacts:
    """The routes source's view: which interfaces carry the primary and backup default routes."""
    return RouteFacts(
        primary_interface=state.primary_interface,
        backup_interface=state.backup_interface,
        on_backup=state.on_backup,
    )


def session_summary(state: CadSessionsState) -> SessionFacts:
    """The CAD sessions source's per-target facts, taken together: the worst session counts."""
    waits = [w for t in state.targets if (w := _number(t.since_ack)) is not None]
    return SessionFacts(
        sum(t.sessions for t in state.targets),
        max((t.stalled for t in state.targets), default=0),
        max(waits, default=None),
    )


def coerce(source: str, facts: object) -> tuple[Facts | None, tuple[str, ...]]:
    """Turn what a source handed over into one of the records above, plus the problems found.

    Returns ``(None, problems)`` for an unknown source name or a value that is not this source's
    record, state or a mapping.
    """
    wanted = _TYPES.get(source)
    if wanted is None:
        return None, (f"{source}: unknown facts source (known: {', '.join(SOURCES)})",)
    if isinstance(facts, wanted):
        return facts, ()
    if source == "vpn" and isinstance(facts, VpnState):
        return vpn_summary(facts), ()
    if source == "interfaces" and isinstance(facts, InterfacesState):
        return link_summary(facts), ()
    if source == "routes" and isinstance(facts, RoutesState):
        return route_summary(facts), ()
    if source == "cad_sessions" and isinstance(facts, CadSessionsState):
        return session_summary(facts), ()
    if isinstance(facts, Mapping):
        return _from_mapping(source, wanted, facts)
    return None, (f"{source}: expected a {wanted.__name__} record (got {type(facts).__name__})",)


def _from_mapping(
    source: str, wanted: type[Facts], facts: Mapping[Any, object]
) -> tuple[Facts | None, tuple[str, ...]]:
    kinds = _kinds(wanted)
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, kind in kinds.items():
        raw = facts.get(name)
        if raw is None:
            continue
        value, problem = _convert(kind, raw)
        if problem:
            problems.append(f"{source}.{name}: {problem}")
        else:
            values[name] = value
    problems += [
        f"{source}.{name}: not a field of {wanted.__name__} (fields: {', '.join(kinds)})"
        for name in facts
        if name not in kinds
    ]
    return wanted(**values), tuple(problems)


def _kinds(record: type[Facts]) -> dict[str, str]:
    """Each field a mapping may set, by the kind of value it takes (from the record's own types)."""
    hints = typing.get_type_hints(record)
    out: dict[str, str] = {}
    for field in dataclasses.fields(record):
        hint = hints[field.name]
        members = set(typing.get_args(hint)) if isinstance(hint, types.UnionType) else {hint}
        members.discard(type(None))
        if members == {bool}:
            out[field.name] = "flag"
        elif members and members <= {int, float}:
            out[field.name] = "number"
        elif members == {str}:
            out[field.name] = "text"
    return out


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


def _number(value: float | None) -> float | None:
    """A source's number as the model takes it: a float, or None for absent or NaN."""
    if value is None or math.isnan(value):
        return None
    return float(value)
