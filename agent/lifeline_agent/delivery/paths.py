"""Which way to the collector is tried, and when: the ordered endpoints, each over the default
route and bound to the backup interface, and the cool-down of a path that failed.

``[collector].endpoints`` is an ordered list; public ones count only with
``allow_public``. Each endpoint is tried over the default route, then (``via_backup``) bound to
the backup interface — ``collector.backup_interface`` or the default route with the higher
metric. A connect error, a timeout, a TLS failure or server errors past a short budget put that
path in a jittered, growing cool-down and the next path is tried at once. The last path that
worked is tried first; a background check fails back to a preferred path once it answers again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from lifeline_agent.clock import Clock
from lifeline_agent.config import CollectorSection
from lifeline_agent.delivery.transport import SO_BINDTODEVICE
from lifeline_agent.discovery import PROC_ROUTE, read_default_gateways
from lifeline_agent.logs import bind

log = logging.getLogger(__name__)

INGEST_PATH = "/api/v1/ingest"
SERVER_ERROR_BUDGET = 10.0  # seconds of 5xx on one path before the next path is tried
DISCOVERY_TTL = 5.0  # the backup interface is looked up again after this long


class Cooldown(Protocol):
    """The growing wait of one path after it failed; each path gets its own ``copy()``."""

    attempt: int

    def next(self) -> float: ...

    def reset(self) -> None: ...

    def copy(self) -> Cooldown: ...


@dataclass(frozen=True, slots=True)
class DeliveryPath:
    """One way to one endpoint: over the default route, or bound to the backup interface."""

    rank: int  # position in the ordered list; 0 is the preferred path
    base: str  # the endpoint's base URL
    via: str  # "default" | "backup"
    interface: str = ""  # the interface bound to ("" = follow the routing table)

    @property
    def url(self) -> str:
        return self.base + INGEST_PATH

    @property
    def name(self) -> str:
        return f"{self.base} via {self.interface or 'the default route'}"


@dataclass(slots=True)
class PathState:
    backoff: Cooldown
    ready_at: float = 0.0  # monotonic; the path cools down until then
    server_errors_since: float | None = None
    failures: int = 0
    last_error: str = ""


class Paths:
    """The ordered routes, which one works now, and which ones cool down after failing."""

    def __init__(
        self,
        collector: CollectorSection,
        backoff: Cooldown,
        clock: Clock,
        route_file: str = PROC_ROUTE,
        server_budget: float = SERVER_ERROR_BUDGET,
    ) -> None:
        self.collector = collector
        self.clock = clock
        self.route_file = route_file
        self.server_budget = server_budget
        self._template = backoff
        self.bases = [ep.url for ep in collector.endpoints if not ep.public or collector.allow_public]
        self._via_backup = {ep.url: ep.via_backup for ep in collector.endpoints}
        self._public = {ep.url for ep in collector.endpoints if ep.public}
        # What the health model knows about the way out (see :meth:`hint`).
        self.primary_down = False
        self.tunnel_down = False
        self.current: DeliveryPath | None = None  # the last route that delivered
        self._states: dict[tuple[str, str], PathState] = {}
        self._backup: tuple[float, str] | None = None
        self._unbindable_logged = False

    def backup_interface(self) -> str:
        """``collector.backup_interface``, else the default route with the higher metric ("" if none)."""
        if self.collector.backup_interface:
            return self.collector.backup_interface
        now = self.clock.monotonic()
        if self._backup is None or now - self._backup[0] > DISCOVERY_TTL:
            gateways = read_default_gateways(self.route_file)
            self._backup = (now, gateways[1].interface if len(gateways) > 1 else "")
        return self._backup[1]

    def routes(self) -> list[DeliveryPath]:
        backup = self.backup_interface()
        if backup and SO_BINDTODEVICE is None:
            if not self._unbindable_logged:
                log.warning(
                    "cannot bind to the backup interface %s on this system: default route only", backup
                )
                self._unbindable_logged = True
            backup = ""
        out: list[DeliveryPath] = []
        for base in self.bases:
            out.append(DeliveryPath(len(out), base, "default"))
            if backup and self._via_backup.get(base, True):
                out.append(DeliveryPath(len(out), base, "backup", backup))
        return out

    def state(self, route: DeliveryPath) -> PathState:
        key = (route.base, route.via)
        found = self._states.get(key)
        if found is None:
            found = self._states[key] = PathState(self._template.copy())
        return found

    def hint(self, primary_down: bool, tunnel_down: bool) -> None:
        """The health model's view: the home side of the primary path is down (link, router or
        ISP failed), or the tunnel is (VPN or agency side failed while the internet works).
        :meth:`order` then tries first the paths that avoid what is known broken, so a state
        change does not first wait on a path the agent already knows is dead."""
        self.primary_down, self.tunnel_down = primary_down, tunnel_down

    def _avoids_known_breakage(self, route: DeliveryPath) -> bool:
        if self.primary_down and route.via != "backup":
            return False
        return not (self.tunnel_down and route.base not in self._public)

    def order(self, force: bool = False) -> list[DeliveryPath]:
        """Routes to try now: the one that worked last, then the rest by rank; cooling ones skipped.

        Paths through what the health model knows is down go last (:meth:`hint`)."""
        now = self.clock.monotonic()
        routes = self.routes()
        current = self.current

        def key(r: DeliveryPath) -> tuple[bool, bool, int]:
            is_current = current is not None and (r.base, r.via) == (current.base, current.via)
            return (not self._avoids_known_breakage(r), not is_current, r.rank)

        routes.sort(key=key)
        return [r for r in routes if force or self.state(r).ready_at <= now]

    def earliest_ready(self) -> float:
        """Seconds until the first cooling route may be tried again."""
        now = self.clock.monotonic()
        waits = [self.state(r).ready_at - now for r in self.routes()]
        return max(0.0, min(waits, default=0.0))

    def within_server_budget(self, route: DeliveryPath) -> bool:
        """True while 5xx on ``route`` have lasted less than the budget (retry it, do not move on)."""
        state = self.state(route)
        now = self.clock.monotonic()
        if state.server_errors_since is None:
            state.server_errors_since = now
        return now - state.server_errors_since < self.server_budget

    def failed(self, route: DeliveryPath, reason: str, cooldown: float | None = None) -> float:
        """Cool ``route`` down (growing, jittered; or ``cooldown`` seconds) and return the delay."""
        state = self.state(route)
        delay = cooldown if cooldown is not None else state.backoff.next()
        state.ready_at = self.clock.monotonic() + delay
        state.server_errors_since = None
        state.failures += 1
        logger = bind(log, endpoint=route.base, interface=route.interface or "default")
        if reason != state.last_error:
            logger.warning(
                "delivery via %s failed: %s (next try on this path in %.1fs)", route.name, reason, delay
            )
        else:
            logger.debug("delivery via %s failed again: %s", route.name, reason)
        state.last_error = reason
        return delay

    def succeeded(self, route: DeliveryPath) -> None:
        state = self.state(route)
        previous = self.current
        if state.failures:
            log.info("delivery via %s works again after %d failed attempts", route.name, state.failures)
        state.backoff.reset()
        state.ready_at = 0.0
        state.server_errors_since = None
        state.failures = 0
        state.last_error = ""
        switched = previous is None or (previous.base, previous.via) != (route.base, route.via)
        if switched and (previous is not None or route.rank != 0):
            bind(log, endpoint=route.base, interface=route.interface or "default").info(
                "delivering via %s (path %d of the ordered list)", route.name, route.rank + 1
            )
        self.current = route

    def prefer(self, route: DeliveryPath) -> None:
        """Fail back: ``route`` answered its reachability check, so it is tried first again."""
        state = self.state(route)
        state.backoff.reset()
        state.ready_at = 0.0
        log.info("failing back to %s: it answers again", route.name)
        self.current = route
