"""What the agent does when netlink announces a link, address or route change.

Each change is recorded as an event at once. A burst (a link going down takes its addresses and
routes with it) is taken as one: after NETLINK_SETTLE the network sources are read again,
discovery runs again, every target is re-probed and the health model judges without waiting for
its tick. Bursts are handled at most every NETLINK_MIN_GAP seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from lifeline_agent.clock import pause
from lifeline_agent.errors import SourceUnavailable
from lifeline_agent.recorder import Recorder
from lifeline_agent.sources.poller import SourcePoller
from lifeline_agent.watchers.netlink import NetlinkEvent, NetlinkWatcher

log = logging.getLogger(__name__)

NETLINK_SETTLE = 0.02  # a link change comes as a burst (link, addresses, routes): take it as one
NETLINK_MIN_GAP = 0.5  # re-probe bursts at most this often
EVENT_TYPES = {"link": "link.changed", "address": "address.changed", "route": "route.changed"}
# Power too: the mains going out takes the home router's switch (and the laptop's carrier) down in
# the same instant, and the verdict should say "power" from the first evaluation.
RE_READ = ("vpn", "interfaces", "routes", "power")

WatcherFactory = Callable[[Callable[[NetlinkEvent], None]], NetlinkWatcher]


class NetlinkReactions:
    """Runs the netlink watcher and reacts to its events.

    ``rediscover`` runs discovery again, ``reprobe`` probes every target now and returns their
    names, ``evaluate`` asks the health model for a judgement on the next turn of the loop.
    """

    def __init__(
        self,
        recorder: Recorder,
        poller: SourcePoller,
        *,
        rediscover: Callable[[], None],
        reprobe: Callable[[], list[str]],
        evaluate: Callable[[], None],
        factory: WatcherFactory | None = None,
    ) -> None:
        self.recorder = recorder
        self.poller = poller
        self.rediscover = rediscover
        self.reprobe = reprobe
        self.evaluate = evaluate
        self.factory: WatcherFactory = factory or (lambda callback: NetlinkWatcher(callback))
        self.watcher: NetlinkWatcher | None = None
        self._changed: asyncio.Event | None = None
        self._interfaces: set[str] = set()

    def watching(self) -> bool:
        """The netlink watcher is alive, so a link, address or route change wakes the reads."""
        return self.watcher is not None and self.watcher.running

    async def start(self, enabled: bool) -> NetlinkWatcher | None:
        """Start the watcher (``enabled``: ``[providers] netlink``); says in the providers why not."""
        if not enabled:
            self.poller.set_provider("netlink", False, "off in [providers]")
            return None
        loop = asyncio.get_running_loop()

        def deliver(event: NetlinkEvent) -> None:  # on the watcher's thread: hand over, nothing else
            loop.call_soon_threadsafe(self.on_event, event)

        watcher = self.factory(deliver)
        try:
            await asyncio.to_thread(watcher.start)
        except SourceUnavailable as exc:
            self.poller.set_provider("netlink", False, exc.reason)
            return None
        self.poller.set_provider("netlink", True, "")
        self.watcher = watcher
        return watcher

    def on_event(self, event: NetlinkEvent) -> None:
        attributes: dict[str, str | int | float | bool] = {
            **event.attributes,
            "interface": event.interface,
            "action": event.action,
        }
        if event.synthesized:
            attributes["synthesized"] = True
        self.recorder.event(
            EVENT_TYPES.get(event.kind, "netlink.changed"), attributes, int(event.ts * 1000) or None
        )
        self._interfaces.add(event.interface)
        if self._changed is not None:
            self._changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        changed = self._changed = asyncio.Event()
        sources = [s for s in self.poller.sources() if s.name in RE_READ]
        while not stop.is_set():
            waiter = asyncio.ensure_future(changed.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in (waiter, stopper):
                task.cancel()
            if stop.is_set():
                return
            await asyncio.sleep(NETLINK_SETTLE)
            changed.clear()
            interfaces, self._interfaces = sorted(self._interfaces), set()
            # The kernel does not announce every route it drops: look again before judging.
            for source in sources:
                if source.name != "power" or self.poller.polled("power"):
                    await self.poller.read(source)
            self.rediscover()
            poked = self.reprobe()
            log.info(
                "network changed (%s): re-probing %d targets",
                ", ".join(i for i in interfaces if i) or "routes",
                len(poked),
                extra={"reprobe": ",".join(sorted(poked))},
            )
            self.evaluate()
            await pause(stop, NETLINK_MIN_GAP)

    async def stop(self) -> None:
        if self.watcher is not None:
            await asyncio.to_thread(self.watcher.stop)
