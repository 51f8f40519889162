"""Link, address and route changes from the kernel the moment they happen (rtnetlink multicast).

``NetlinkWatcher`` subscribes a raw ``AF_NETLINK`` socket to the link, address and route groups
(IPv4 and IPv6) and reads it on one thread. The datagrams are walked with ``struct`` by the same
small reader the sources use (``netlink.attributes``, ``netlink.rtnetlink``) into the ``msg.dump()``
shape ``event_from_message`` takes, so no pyroute2 is loaded (it cost ~8 MB of RSS; only a
watcher of another named namespace, as in the lab tests, has pyroute2 open its socket). Each change
becomes a ``NetlinkEvent`` handed to the callback, which the scheduler uses to re-probe at once.
The kernel removes IPv4 routes on link-down without always saying so, so after every link event
the watcher re-reads the routing table and reports routes that vanished or appeared
(``synthesized=True``); it does the same for links and routes if the kernel says notifications
were lost (``ENOBUFS``).

The callback runs on the watcher thread: keep it short (enqueue, set an event) and do not raise.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from lifeline_agent.errors import SourceError, SourceUnavailable
from lifeline_agent.netlink.attributes import as_int, attr, nla_text, split_attrs, split_messages
from lifeline_agent.netlink.rtnetlink import (
    RTM_GETROUTE,
    RTMSG,
    Netlink,
    link_dump,
    route_dump,
)
from lifeline_agent.sources.base import SourceEvent

log = logging.getLogger(__name__)

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
RT_TABLE_LOCAL = 255
OPER_UP = frozenset({"UP", "UNKNOWN", ""})  # tun devices report UNKNOWN while working
_FAMILIES: dict[int, str] = {int(socket.AF_INET): "ipv4", int(socket.AF_INET6): "ipv6"}

RouteKey = tuple[str, str, int, str, int]  # family, dst/len, oif, gateway, metric


@dataclass(frozen=True, slots=True)
class NetlinkEvent:
    kind: str  # link | address | route
    action: str  # link: up | down | removed; address, route: added | removed
    interface: str
    attributes: dict[str, str | int | float | bool] = field(default_factory=dict)
    ts: float = 0.0  # Unix time the message was received
    synthesized: bool = False  # found by re-reading routes after a link event, not announced

    @property
    def type(self) -> str:
        return f"netlink.{self.kind}_{self.action}"

    def to_source_event(self) -> SourceEvent:
        attributes = {**self.attributes, "interface": self.interface}
        if self.synthesized:
            attributes["synthesized"] = True
        return SourceEvent(self.type, attributes)


@dataclass(frozen=True, slots=True)
class LinkStateKey:
    admin_up: bool
    lower_up: bool
    oper_state: str

    @property
    def up(self) -> bool:
        """Carrier and RFC 2863 state agree (the kernel sets LOWER_UP a moment before operstate UP)."""
        return self.admin_up and self.lower_up and self.oper_state in OPER_UP


def link_state(msg: Mapping[str, Any]) -> LinkStateKey:
    flags = as_int(msg.get("flags")) or 0
    return LinkStateKey(
        bool(flags & IFF_UP), bool(flags & IFF_LOWER_UP), str(attr(msg, "IFLA_OPERSTATE") or "")
    )


def route_key(msg: Mapping[str, Any]) -> RouteKey | None:
    """Identity of a route in a dumped RTM_*ROUTE; None for the local table (not a path decision)."""
    table = as_int(attr(msg, "RTA_TABLE")) or as_int(msg.get("table")) or 0
    if table == RT_TABLE_LOCAL:
        return None
    dst = attr(msg, "RTA_DST")
    return (
        _FAMILIES.get(as_int(msg.get("family")) or 0, "other"),
        f"{dst}/{msg.get('dst_len', 0)}" if dst else "default",
        as_int(attr(msg, "RTA_OIF")) or 0,
        str(attr(msg, "RTA_GATEWAY") or ""),
        as_int(attr(msg, "RTA_PRIORITY")) or 0,
    )


def event_from_message(
    msg: Mapping[str, Any], names: Mapping[int, str], ts: float = 0.0
) -> NetlinkEvent | None:
    """One dumped rtnetlink message (``msg.dump()`` plus its ``event``) → an event, or None if irrelevant."""
    kind = msg.get("event", "")
    if kind in ("RTM_NEWLINK", "RTM_DELLINK"):
        name = str(attr(msg, "IFLA_IFNAME") or names.get(as_int(msg.get("index")) or 0, ""))
        state = link_state(msg)
        action = "removed" if kind == "RTM_DELLINK" else ("up" if state.up else "down")
        attributes: dict[str, str | int | float | bool] = {
            "admin_up": state.admin_up,
            "carrier": state.lower_up,
            "oper_state": state.oper_state,
        }
        changes = as_int(attr(msg, "IFLA_CARRIER_CHANGES"))
        if changes is not None:
            attributes["carrier_changes"] = changes
        return NetlinkEvent("link", action, name, attributes, ts)
    if kind in ("RTM_NEWADDR", "RTM_DELADDR"):
        address = attr(msg, "IFA_LOCAL") or attr(msg, "IFA_ADDRESS")
        index = as_int(msg.get("index")) or 0
        name = str(attr(msg, "IFA_LABEL") or names.get(index, f"if{index}"))
        return NetlinkEvent(
            "address",
            "added" if kind == "RTM_NEWADDR" else "removed",
            name,
            {"address": f"{address}/{msg.get('prefixlen', 0)}"},
            ts,
        )
    if kind in ("RTM_NEWROUTE", "RTM_DELROUTE"):
        key = route_key(msg)
        if key is None:
            return None
        return _route_event(key, "added" if kind == "RTM_NEWROUTE" else "removed", names, ts, False)
    return None


def _route_event(
    key: RouteKey, action: str, names: Mapping[int, str], ts: float, synthesized: bool
) -> NetlinkEvent:
    family, dst, oif, gateway, metric = key
    attributes: dict[str, str | int | float | bool] = {"family": family, "dst": dst, "metric": metric}
    if gateway:
        attributes["gateway"] = gateway
    return NetlinkEvent(
        "route", action, names.get(oif, f"if{oif}" if oif else ""), attributes, ts, synthesized
    )


# --- raw rtnetlink multicast ---------------------------------------------------------------------------

# The legacy group bit masks of <linux/rtnetlink.h> that bind() takes.
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE, RTM_DELROUTE = 16, 17, 20, 21, 24, 25
MESSAGE_NAMES: dict[int, str] = {
    RTM_NEWLINK: "RTM_NEWLINK",
    RTM_DELLINK: "RTM_DELLINK",
    RTM_NEWADDR: "RTM_NEWADDR",
    RTM_DELADDR: "RTM_DELADDR",
    RTM_NEWROUTE: "RTM_NEWROUTE",
    RTM_DELROUTE: "RTM_DELROUTE",
}
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL = 1, 2, 3
RECV = 1 << 16  # the kernel sends one message per multicast datagram (a link message is ~1.5 KB)
RCVBUF = 1 << 20  # room for a burst (a dock, a VPN coming up) while the thread re-reads the routes


def address_dump(payload: memoryview) -> dict[str, Any]:
    """A raw RTM_NEWADDR/RTM_DELADDR → the ``msg.dump()`` shape of the attributes the watcher reads."""
    family, prefixlen, flags, scope, index = IFADDRMSG.unpack_from(payload)
    found = split_attrs(payload, IFADDRMSG.size)
    attrs: list[list[Any]] = []
    for code, name in ((IFA_ADDRESS, "IFA_ADDRESS"), (IFA_LOCAL, "IFA_LOCAL")):
        if (value := found.get(code)) is not None and family in _FAMILIES:
            attrs.append([name, socket.inet_ntop(family, bytes(value))])
    if (label := found.get(IFA_LABEL)) is not None:
        attrs.append(["IFA_LABEL", nla_text(label)])
    return {
        "family": family,
        "prefixlen": prefixlen,
        "flags": flags,
        "scope": scope,
        "index": index,
        "attrs": attrs,
    }


def decode_message(kind: int, payload: memoryview) -> dict[str, Any] | None:
    """One raw rtnetlink message → its ``msg.dump()`` shape with ``event`` set; None for other types.

    Raises ValueError for a message too short for its header or with an address of the wrong size.
    """
    name = MESSAGE_NAMES.get(kind)
    if name is None:
        return None
    try:
        if kind in (RTM_NEWLINK, RTM_DELLINK):
            dumped = link_dump(payload)
        elif kind in (RTM_NEWADDR, RTM_DELADDR):
            dumped = address_dump(payload)
        else:
            dumped = route_dump(payload)
    except struct.error as exc:
        raise ValueError(f"{name} of {len(payload)} bytes: {exc}") from exc
    dumped["event"] = name
    return dumped


class _Tables(Netlink):
    """Dumps of links and routes over one kept rtnetlink socket (inside ``netns`` if given)."""

    def new_socket(self) -> socket.socket:
        """A fresh, unbound rtnetlink socket in the same namespace (for the multicast subscription)."""
        return self._open()

    def link_dumps(self) -> list[dict[str, Any]]:
        return self._dump_links()

    def route_keys(self) -> set[RouteKey]:
        every = RTMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0, 0)
        keys: set[RouteKey] = set()
        for payload in self._dump(RTM_GETROUTE, every, "route dump"):
            dumped = route_dump(payload)
            if dumped["family"] in _FAMILIES and (key := route_key(dumped)) is not None:
                keys.add(key)
        return keys


class NetlinkWatcher:
    """Watches rtnetlink on a dedicated thread; ``start()`` returns once subscribed.

    ``start()`` subscribes first and dumps the links and routes after, so no change falls between
    the two; the thread then waits on the subscription and on a wake-up socket ``stop()`` writes to.
    """

    def __init__(self, callback: Callable[[NetlinkEvent], None], *, netns: str | None = None) -> None:
        self.callback = callback
        self.netns = netns
        self._thread: threading.Thread | None = None
        self._events: socket.socket | None = None
        self._tables: _Tables | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self.error = ""
        self._names: dict[int, str] = {}
        self._links: dict[int, LinkStateKey] = {}
        self._routes: set[RouteKey] = set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Subscribe, learn the current links and routes, start the thread; SourceUnavailable if
        rtnetlink cannot be used (each datagram of the start-up dumps waits at most 2 s)."""
        if self._thread is not None or self._events is not None:
            raise RuntimeError("watcher already started")
        where = f" in netns {self.netns}" if self.netns else ""
        tables = self._tables = _Tables(self.netns)
        try:
            events = self._events = tables.new_socket()
            _enlarge_receive_buffer(events)
            events.bind((0, GROUPS))
            for dumped in tables.link_dumps():
                index = as_int(dumped.get("index")) or 0
                self._names[index] = str(attr(dumped, "IFLA_IFNAME") or "")
                self._links[index] = link_state(dumped)
            self._routes = tables.route_keys()
            self._wake = socket.socketpair()
        except (OSError, SourceError) as exc:
            reason = exc.reason if isinstance(exc, SourceError) else (exc.strerror or str(exc))
            self.error = f"netlink watcher{where}: {reason}"
            self._close()
            raise SourceUnavailable(self.error) from exc
        self._thread = threading.Thread(
            target=self._run, args=(events, self._wake[0]), name="lifeline-netlink", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        wake = self._wake
        if wake is not None:
            with contextlib.suppress(OSError):  # already closed: the thread has ended
                wake[1].send(b"x")
        if self._thread is not None:
            self._thread.join(timeout)
        if not self.running:
            self._close()

    def __enter__(self) -> NetlinkWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _close(self) -> None:
        for sock in (self._events, *(self._wake or ())):
            if sock is not None:
                sock.close()
        self._events = None
        self._wake = None
        if self._tables is not None:
            self._tables.close()
            self._tables = None

    def _run(self, events: socket.socket, wake: socket.socket) -> None:
        while True:
            readable, _, _ = select.select([events, wake], [], [])
            if wake in readable:
                return
            try:
                data = events.recv(RECV)
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the kernel dropped notifications: look again
                    log.warning("netlink notifications were lost (receive buffer full): re-reading")
                    self._resync(time.time())
                    continue
                self.error = f"netlink watcher: {exc.strerror or exc}"
                log.error("%s; no more link, address or route events", self.error)
                return
            self._datagram(data, time.time())

    def _datagram(self, data: bytes, now: float) -> None:
        try:
            messages = [decode_message(kind, payload) for kind, _flags, _seq, payload in split_messages(data)]
        except ValueError as exc:  # a truncated message: the kernel never sends one, so say so
            log.warning("netlink: undecodable notification skipped: %s", exc)
            return
        for msg in messages:
            if msg is not None:
                self._handle(msg, now)

    def _handle(self, msg: dict[str, Any], now: float) -> None:
        kind = msg.get("event")
        index = as_int(msg.get("index")) or 0
        if kind == "RTM_NEWLINK":
            name = attr(msg, "IFLA_IFNAME")
            if name:
                self._names[index] = str(name)
            state = link_state(msg)
            if self._links.get(index) == state:
                return  # a change that is not about carrier or state (mtu, stats, promiscuity)
            self._links[index] = state
        elif kind == "RTM_DELLINK":
            self._links.pop(index, None)
        event = event_from_message(msg, self._names, now)
        if event is None:
            return
        if event.kind == "route":
            key = route_key(msg)
            if key is not None:
                (self._routes.add if event.action == "added" else self._routes.discard)(key)
        self.callback(event)
        if event.kind == "link":
            # The kernel drops IPv4 routes on link-down without always announcing it: look.
            self._compare_routes(now)
        if kind == "RTM_DELLINK":
            self._names.pop(index, None)

    def _compare_routes(self, now: float) -> None:
        """Report routes that appeared or vanished since the last look (``synthesized``)."""
        assert self._tables is not None
        try:
            current = self._tables.route_keys()
        except SourceError as exc:  # the next link event looks again
            log.warning("netlink watcher: routes not re-read: %s", exc.reason)
            return
        for key in sorted(self._routes - current):
            self.callback(_route_event(key, "removed", self._names, now, True))
        for key in sorted(current - self._routes):
            self.callback(_route_event(key, "added", self._names, now, True))
        self._routes = current

    def _resync(self, now: float) -> None:
        """After lost notifications: report every link whose state changed, then the routes."""
        assert self._tables is not None
        try:
            dumped = self._tables.link_dumps()
        except SourceError as exc:
            log.warning("netlink watcher: links not re-read: %s", exc.reason)
            return
        seen: set[int] = set()
        for link in dumped:
            index = as_int(link.get("index")) or 0
            seen.add(index)
            self._names[index] = str(attr(link, "IFLA_IFNAME") or self._names.get(index, ""))
            state = link_state(link)
            if self._links.get(index) != state:
                self._links[index] = state
                event = event_from_message(link | {"event": "RTM_NEWLINK"}, self._names, now)
                if event is not None:
                    self.callback(replace(event, synthesized=True))
        for index in sorted(self._links.keys() - seen):
            del self._links[index]
            gone = {"event": "RTM_DELLINK", "index": index, "flags": 0, "attrs": []}
            event = event_from_message(gone, self._names, now)
            if event is not None:
                self.callback(replace(event, synthesized=True))
            self._names.pop(index, None)
        self._compare_routes(now)


def _enlarge_receive_buffer(sock: socket.socket) -> None:
    """Make room for bursts: SO_RCVBUFFORCE passes the system limit where the agent may (CAP_NET_ADMIN)."""
    force = getattr(socket, "SO_RCVBUFFORCE", 33)
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, RCVBUF)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
