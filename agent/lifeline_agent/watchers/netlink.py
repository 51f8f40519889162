"""Link, address and route changes from the kernel the moment they happen (rtnetlink multicast).

``NetlinkWatcher`` runs one thread that creates its pyroute2 socket, binds the link/address/route
groups and calls ``get()`` on that same thread (pyroute2's sync API only delivers there). Each
change becomes a ``NetlinkEvent`` handed to the callback, which the scheduler uses to re-probe at
once. The kernel removes IPv4 routes on link-down without always saying so, so after every link
event the watcher re-reads the routing table and reports routes that vanished or appeared
(``synthesized=True``).

The callback runs on the watcher thread: keep it short (enqueue, set an event) and do not raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lifeline_agent.sources._nla import as_int, attr
from lifeline_agent.sources.base import SourceEvent
from lifeline_agent.sources.errors import SourceUnavailable

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


class NetlinkWatcher:
    """Watches rtnetlink on a dedicated thread; ``start()`` returns once subscribed.

    The thread runs its own asyncio loop with pyroute2's ``AsyncIPRoute``: the sync API reads
    several datagrams per call and queues them inside pyroute2, where ``select()`` cannot see them.
    """

    def __init__(self, callback: Callable[[NetlinkEvent], None], *, netns: str | None = None) -> None:
        self.callback = callback
        self.netns = netns
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self.error = ""
        self._names: dict[int, str] = {}
        self._links: dict[int, LinkStateKey] = {}
        self._routes: set[RouteKey] = set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            raise RuntimeError("watcher already started")
        self._thread = threading.Thread(target=self._run, name="lifeline-netlink", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise SourceUnavailable(f"netlink watcher did not subscribe within {timeout:g}s")
        if self.error:
            self.stop()
            raise SourceUnavailable(self.error)

    def stop(self, timeout: float = 5.0) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop finished between the check and the call
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> NetlinkWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        finally:
            self._ready.set()

    def _open(self) -> Any:
        from pyroute2 import AsyncIPRoute

        return AsyncIPRoute(netns=self.netns, flags=0) if self.netns else AsyncIPRoute()

    async def _main(self) -> None:
        from pyroute2.netlink.exceptions import NetlinkError
        from pyroute2.netlink.rtnl import (
            RTMGRP_IPV4_IFADDR,
            RTMGRP_IPV4_ROUTE,
            RTMGRP_IPV6_IFADDR,
            RTMGRP_IPV6_ROUTE,
            RTMGRP_LINK,
        )

        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        events = dumps = None
        try:
            events, dumps = self._open(), self._open()
            await events.bind(
                groups=RTMGRP_LINK
                | RTMGRP_IPV4_IFADDR
                | RTMGRP_IPV6_IFADDR
                | RTMGRP_IPV4_ROUTE
                | RTMGRP_IPV6_ROUTE
            )
            async for m in await dumps.get_links():
                self._names[m["index"]] = m.get_attr("IFLA_IFNAME")
                self._links[m["index"]] = link_state(m.dump())
            self._routes = await self._dump_routes(dumps)
        except (NetlinkError, OSError) as exc:
            self.error = f"netlink watcher{f' in netns {self.netns}' if self.netns else ''}: {exc}"
            for sock in (events, dumps):
                if sock is not None:
                    sock.close()
            return
        self._ready.set()
        pump = asyncio.ensure_future(self._pump(events, dumps))
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({pump, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, stop):
                task.cancel()
            await asyncio.gather(pump, stop, return_exceptions=True)
            events.close()
            dumps.close()
        failure = pump.exception() if pump.done() and not pump.cancelled() else None
        if failure is not None:
            raise failure  # a bug in the handler or the callback: visible through threading.excepthook

    async def _pump(self, events: Any, dumps: Any) -> None:
        while True:
            async for m in events.get():
                await self._handle(m.dump() | {"event": m.get("event")}, dumps)

    async def _dump_routes(self, dumps: Any) -> set[RouteKey]:
        keys: set[RouteKey] = set()
        for family in (socket.AF_INET, socket.AF_INET6):
            async for m in await dumps.get_routes(family=family):
                key = route_key(m.dump())
                if key is not None:
                    keys.add(key)
        return keys

    async def _handle(self, msg: dict[str, Any], dumps: Any) -> None:
        now = time.time()
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
            current = await self._dump_routes(dumps)
            for key in sorted(self._routes - current):
                self.callback(_route_event(key, "removed", self._names, now, True))
            for key in sorted(current - self._routes):
                self.callback(_route_event(key, "added", self._names, now, True))
            self._routes = current
        if kind == "RTM_DELLINK":
            self._names.pop(index, None)
