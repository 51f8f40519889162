"""Local sources: what the laptop itself knows about every layer between the dispatcher and CAD.

The contract the scheduler relies on
------------------------------------
Every source has the same small interface (``Source`` in ``base.py``)::

    class Source(Protocol):
        name: str                              # "wifi", "cellular", "power", "vpn", "interfaces",
                                               # "routes", "cad_sessions"
        def available(self) -> Availability    # (ok, reason), e.g. (False, "needs CAP_NET_ADMIN")
        def read(self) -> Reading              # never raises for an expected failure

A ``Reading`` is frozen: ``samples`` (``SourceSample(name, labels, value)`` with names and labels
from ``lifeline_wire.catalog.sources``), ``events`` (``SourceEvent(type, attributes)`` for
transitions seen since the previous read), ``facts`` (a typed object per source — ``WifiFacts``,
``CellularFacts``, ``PowerFacts``, ``VpnState``, ``InterfacesState``, ``RoutesState``,
``CadSessionsState`` — that the health model reads) and ``error`` (non-empty when the read
produced no data: "no data" is never an empty, healthy-looking reading). Values may be
``math.inf`` (a WireGuard handshake that never happened): the recorder encodes it as "+Inf".

Sources are stateful only to turn changes into events and keep counters monotonic: call
``read()`` from one thread at a time. Reads are cheap (a netlink round trip, a file, a short
subprocess) except the split-DNS check in ``routes``, which sends DNS queries at most every
``split_dns_interval`` seconds.

Building them
-------------
``build_sources(config)`` walks ``REGISTRY`` (kind → ``SourceSpec``: factory, backends,
privileges, metrics) in registration order — ``vpn`` always before ``routes``, which imports it and
reads the VPN endpoints from it — and returns every source that is not off. ``[providers]``
picks the backends of wifi / cellular / power (``auto`` tries them in order; ``fixture`` replays
``providers.fixture_file``, a JSON-lines file whose newest line per ``"source"`` wins). A source
that cannot run here (not Linux, no radio, no privilege) is still returned; its ``available()``
says why, and ``provider_samples(sources)`` turns that into ``lifeline_provider_available``.

The netlink watcher lives in ``lifeline_agent.watchers.netlink``: it calls back on link, address
and route changes so the scheduler can re-probe and re-read ``interfaces``/``routes`` at once.
"""

from __future__ import annotations

from lifeline_agent.sources import cad_sessions, cellular, interfaces, power, routes, vpn, wifi
from lifeline_agent.sources.base import (
    Availability,
    Reading,
    Source,
    SourceEvent,
    SourceSample,
    UnavailableSource,
)
from lifeline_agent.sources.registry import REGISTRY, SourceSpec, build_sources, provider_samples

KINDS = (
    interfaces.SPEC.kind,
    vpn.SPEC.kind,
    routes.SPEC.kind,
    wifi.SPEC.kind,
    cellular.SPEC.kind,
    power.SPEC.kind,
    cad_sessions.SPEC.kind,
)

__all__ = [
    "KINDS",
    "REGISTRY",
    "Availability",
    "Reading",
    "Source",
    "SourceEvent",
    "SourceSample",
    "SourceSpec",
    "UnavailableSource",
    "build_sources",
    "provider_samples",
]
