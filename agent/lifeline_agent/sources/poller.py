"""Reads the local sources on their intervals, records what they read and hands their facts on.

Also keeps the table of providers (who can produce data here, ``lifeline_provider_available``):
the sources' own availability, checked at start and every PROVIDER_RECHECK seconds, and what the
rest of the agent reports (netlink, traceroute, desktop notifications).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from lifeline_agent.clock import Clock, now_ms, pause
from lifeline_agent.recorder import Recorder
from lifeline_agent.sources.base import Reading, Source

log = logging.getLogger(__name__)

# How often each source is read (seconds); everything else every second. While the netlink watcher
# runs, a link, address or route change re-reads vpn, interfaces, routes (and power) at once, so their polls
# only catch what netlink does not announce (counters, handshakes) and can be slower. Should the
# watcher stop, they go back to every second at their next read: never blind to a cut.
SOURCE_INTERVALS = {"cellular": 5.0, "cad_sessions": 2.0}
SOURCE_INTERVALS_WITH_NETLINK = {**SOURCE_INTERVALS, "interfaces": 5.0, "routes": 5.0, "vpn": 2.0}
DEFAULT_SOURCE_INTERVAL = 1.0
PROVIDER_RECHECK = 60.0  # a hotspot plugged in later makes its provider available
# Hardware that is absent (no radio, no modem, no battery) is not polled: its provider check, every
# PROVIDER_RECHECK seconds, notices it arriving, and reads start then. The network sources are
# always read — their "unavailable" can end with the next netlink event.
POLLED_ONLY_WHEN_AVAILABLE = frozenset({"wifi", "cellular", "power"})

FactsHook = Callable[[str, Any], None]  # (source name, its latest facts)


def source_interval(name: str, watched: bool) -> float:
    """Seconds between two reads of source ``name``, with or without a live netlink watcher."""
    table = SOURCE_INTERVALS_WITH_NETLINK if watched else SOURCE_INTERVALS
    return table.get(name, DEFAULT_SOURCE_INTERVAL)


def close_sources(sources: Sequence[Source]) -> None:
    """Release what sources keep open between reads (netlink sockets); a source may have nothing."""
    for source in sources:
        close = getattr(source, "close", None)
        if callable(close):
            close()


class SourcePoller:
    """``build`` makes the sources (once, on first use: it may open sockets); ``on_facts`` gets
    every reading's facts after they were recorded and stored in ``facts``."""

    def __init__(
        self, recorder: Recorder, clock: Clock, build: Callable[[], Sequence[Source]], on_facts: FactsHook
    ) -> None:
        self.recorder = recorder
        self.clock = clock
        self._build = build
        self._sources: list[Source] | None = None
        self.on_facts = on_facts
        self.providers: dict[str, tuple[bool, str]] = {}  # name → (available, reason)
        self.facts: dict[str, Any] = {}  # the latest facts of each source
        self._errors: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def sources(self) -> list[Source]:
        if self._sources is None:
            self._sources = list(self._build())
        return self._sources

    # -- providers ----------------------------------------------------------------------------

    def check_providers(self, sources: Sequence[Source]) -> None:
        """Who can produce data here; exported as lifeline_provider_available."""
        for source in sources:
            ok, reason = source.available()
            self.set_provider(source.name, ok, reason)

    def set_provider(self, name: str, ok: bool, reason: str) -> None:
        """Record a provider's availability; a change after start is logged."""
        before = self.providers.get(name)
        self.providers[name] = (ok, reason)
        if before is None or before[0] == ok:
            return
        if ok:
            log.info(
                "provider %s available%s", name, f" ({reason})" if reason else "", extra={"provider": name}
            )
        else:
            log.warning("provider %s unavailable: %s", name, reason, extra={"provider": name})

    def log_providers(self) -> None:
        """One line at start: "no data" from a provider must never read as "healthy"."""
        ok = [name for name, (available, _) in self.providers.items() if available]
        missing = [
            f"{name} ({reason})" for name, (available, reason) in self.providers.items() if not available
        ]
        log.info("providers available: %s", ", ".join(ok) or "none")
        if missing:
            log.warning("providers unavailable: %s", "; ".join(missing))

    def polled(self, name: str) -> bool:
        """Whether source ``name`` is read on its interval now (absent hardware waits for its recheck)."""
        return name not in POLLED_ONLY_WHEN_AVAILABLE or self.providers.get(name, (True, ""))[0]

    # -- reading ------------------------------------------------------------------------------

    async def read(self, source: Source) -> Reading[Any]:
        lock = self._locks.setdefault(source.name, asyncio.Lock())
        async with lock:  # a source is read from one thread at a time
            reading = await asyncio.to_thread(source.read)
        self.apply(source.name, reading)
        return reading

    def apply(self, name: str, reading: Reading[Any]) -> None:
        ts = now_ms(self.clock)
        self.recorder.sample_group(
            f"source:{name}", [(s.name, s.value, s.labels) for s in reading.samples], ts
        )
        for event in reading.events:
            self.recorder.event(event.type, event.attributes, ts)
        previous = self._errors.get(name, "")
        if reading.error != previous:
            if reading.error:
                # An unavailable provider was announced at start; a working one failing is news.
                known = not self.providers.get(name, (True, ""))[0]
                level = logging.DEBUG if known else logging.WARNING
                log.log(level, "source %s: %s", name, reading.error, extra={"integration": name})
            else:
                log.info("source %s reads again", name, extra={"integration": name})
            self._errors[name] = reading.error
        if reading.facts is None:
            return
        self.facts[name] = reading.facts
        self.on_facts(name, reading.facts)

    # -- the loops ----------------------------------------------------------------------------

    def loops(
        self, sources: Sequence[Source], stop: asyncio.Event, watching: Callable[[], bool]
    ) -> list[Coroutine[Any, Any, None]]:
        """One loop per pair of intervals (watched, blind), sources in registry order within it."""
        groups: dict[tuple[float, float], list[Source]] = {}
        for source in sources:
            key = (source_interval(source.name, True), source_interval(source.name, False))
            groups.setdefault(key, []).append(source)
        return [self._source_loop(group, stop, watching) for _intervals, group in sorted(groups.items())]

    async def _source_loop(
        self, sources: Sequence[Source], stop: asyncio.Event, watching: Callable[[], bool]
    ) -> None:
        """Read ``sources`` in order, again and again (they share both their intervals)."""
        while not stop.is_set():
            for source in sources:
                if stop.is_set():
                    return
                if self.polled(source.name):
                    await self.read(source)
            interval = source_interval(sources[0].name, watching())
            await pause(stop, interval)

    async def provider_loop(self, sources: Sequence[Source], stop: asyncio.Event) -> None:
        while not stop.is_set():
            await pause(stop, PROVIDER_RECHECK)
            if not stop.is_set():
                results = await asyncio.to_thread(lambda: [(s.name, *s.available()) for s in sources])
                for name, ok, reason in results:
                    self.set_provider(name, ok, reason)
