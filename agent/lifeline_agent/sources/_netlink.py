"""rtnetlink through pyroute2: links and routes as plain facts. ``Any`` stops in this module.

``link_from_dump`` and ``route_from_dump`` take ``msg.dump()``-shaped dicts, so they are tested
with recorded messages; ``Netlink`` is the adapter that asks the kernel (optionally inside a named
network namespace, which is how the lab tests read a namespace from the root one).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lifeline_agent.sources._nla import as_int, attr
from lifeline_agent.sources.errors import SourceReadError, SourceUnavailable

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
ARPHRD_PPP = 512
ARPHRD_NONE = 65534  # tun (IFF_TUN) and WireGuard: no link-layer header
TUNNEL_KINDS = frozenset({"wireguard", "tun", "ppp", "vti", "vti6", "xfrm"})
_ENETUNREACH = 101


@dataclass(frozen=True, slots=True)
class LinkInfo:
    index: int
    name: str
    kind: str  # IFLA_INFO_KIND: wireguard, tun, veth, ppp … ("" for physical NICs)
    arphrd: int
    admin_up: bool  # IFF_UP
    lower_up: bool  # IFF_LOWER_UP: carrier (for tun: a process holds the device open)
    oper_state: str
    carrier_changes: int | None = None
    rx_bytes: int | None = None
    tx_bytes: int | None = None

    @property
    def up(self) -> bool:
        # tun devices report operstate UNKNOWN while working; LOWER_UP leads operstate by a moment.
        return self.admin_up and self.lower_up and self.oper_state in ("UP", "UNKNOWN", "")

    @property
    def is_tunnel(self) -> bool:
        return self.kind in TUNNEL_KINDS or self.arphrd in (ARPHRD_PPP, ARPHRD_NONE)


@dataclass(frozen=True, slots=True)
class RouteInfo:
    dst: str  # "default", or the destination asked for / the prefix
    interface: str
    gateway: str = ""
    prefsrc: str = ""
    metric: int = 0
    table: int = 254


def link_from_dump(msg: Mapping[str, Any]) -> LinkInfo:
    flags = as_int(msg.get("flags")) or 0
    info = attr(msg, "IFLA_LINKINFO")
    stats = attr(msg, "IFLA_STATS64") or attr(msg, "IFLA_STATS") or {}
    return LinkInfo(
        index=as_int(msg.get("index")) or 0,
        name=str(attr(msg, "IFLA_IFNAME") or ""),
        kind=str(attr(info, "IFLA_INFO_KIND") or ""),
        arphrd=as_int(msg.get("ifi_type")) or 0,
        admin_up=bool(flags & IFF_UP),
        lower_up=bool(flags & IFF_LOWER_UP),
        oper_state=str(attr(msg, "IFLA_OPERSTATE") or "UNKNOWN"),
        carrier_changes=as_int(attr(msg, "IFLA_CARRIER_CHANGES")),
        rx_bytes=as_int(stats.get("rx_bytes")) if isinstance(stats, Mapping) else None,
        tx_bytes=as_int(stats.get("tx_bytes")) if isinstance(stats, Mapping) else None,
    )


def route_from_dump(msg: Mapping[str, Any], names: Mapping[int, str], dst: str = "") -> RouteInfo:
    """A dumped RTM_NEWROUTE (a route dump entry or a ``route get`` answer) → RouteInfo."""
    oif = as_int(attr(msg, "RTA_OIF"))
    if not dst:
        prefix = attr(msg, "RTA_DST")
        dst = f"{prefix}/{msg.get('dst_len', 0)}" if prefix else "default"
    return RouteInfo(
        dst=dst,
        interface=names.get(oif, f"if{oif}") if oif is not None else "",
        gateway=str(attr(msg, "RTA_GATEWAY") or ""),
        prefsrc=str(attr(msg, "RTA_PREFSRC") or ""),
        metric=as_int(attr(msg, "RTA_PRIORITY")) or 0,
        table=as_int(attr(msg, "RTA_TABLE")) or as_int(msg.get("table")) or 0,
    )


def _plain(msg: Any) -> dict[str, Any]:
    out: dict[str, Any] = msg.dump()
    out.pop("header", None)
    return out


class Netlink:
    """Opens an rtnetlink socket per call (in ``netns`` if given), so any thread may use it."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns

    def _open(self) -> Any:
        try:
            from pyroute2 import IPRoute
        except ImportError as exc:
            raise SourceUnavailable("pyroute2 is not installed") from exc
        try:
            return IPRoute(netns=self.netns, flags=0) if self.netns else IPRoute()
        except OSError as exc:
            raise SourceUnavailable(f"rtnetlink: {exc}") from exc

    def links(self) -> list[LinkInfo]:
        ipr = self._open()
        try:
            return [link_from_dump(_plain(m)) for m in ipr.get_links()]
        except OSError as exc:
            raise SourceReadError(f"rtnetlink link dump: {exc}") from exc
        finally:
            ipr.close()

    def routes(self, addresses: list[str]) -> tuple[list[RouteInfo], dict[str, RouteInfo | None]]:
        """Default routes (main table, lowest metric first) and the kernel's choice for each address."""
        from pyroute2.netlink.exceptions import NetlinkError

        ipr = self._open()
        try:
            names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ipr.get_links()}
            defaults = []
            for family in (socket.AF_INET, socket.AF_INET6):
                for m in ipr.get_routes(family=family, table=254):
                    d = _plain(m)
                    if d.get("dst_len") == 0 and attr(d, "RTA_OIF") is not None:
                        defaults.append(route_from_dump(d, names))
            chosen: dict[str, RouteInfo | None] = {}
            for address in addresses:
                try:
                    answer = ipr.route("get", dst=address)
                except NetlinkError as exc:
                    if exc.code in (_ENETUNREACH, 113):  # network / host unreachable: no route
                        chosen[address] = None
                        continue
                    raise SourceReadError(f"route get {address}: {exc}") from exc
                chosen[address] = route_from_dump(_plain(answer[0]), names, address) if answer else None
            return sorted(defaults, key=lambda r: r.metric), chosen
        except OSError as exc:
            raise SourceReadError(f"rtnetlink: {exc}") from exc
        finally:
            ipr.close()
