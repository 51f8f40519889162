"""Wi-Fi: signal, transmit bitrate and retries of the associated access point.

Backends, in the order ``auto`` tries them: nl80211 through pyroute2 ``IW`` (station info),
``/proc/net/wireless`` (signal and discarded-after-retry count, no bitrate), and a fixture file.
Parsing is done over plain data: a dumped nl80211 station reply, or the /proc text.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lifeline_agent.config import AgentConfig
from lifeline_agent.errors import SourceError, SourceParseError, SourceReadError, SourceUnavailable
from lifeline_agent.netlink.attributes import as_int, attr
from lifeline_agent.sources.base import (
    IS_LINUX,
    Availability,
    FixtureFile,
    FixtureReplay,
    Reading,
    Record,
    Source,
    SourceEvent,
    SourceSample,
    first_available,
    not_linux,
    read_first,
    sample,
)
from lifeline_agent.sources.registry import SourceSpec, register

PROC_NET_WIRELESS = "/proc/net/wireless"
SYS_CLASS_IEEE80211 = "/sys/class/ieee80211"  # one entry per radio (wiphy) cfg80211 knows


@dataclass(frozen=True, slots=True)
class WifiFacts:
    """What the Wi-Fi source read; the health model judges the link from this very record."""

    interface: str = ""
    connected: bool = True  # associated to an access point
    signal_dbm: float | None = None
    bitrate_bps: float | None = None
    retries: int | None = None  # nl80211: tx retries; /proc: packets discarded after too many retries
    backend: str = ""
    path: str = "primary"  # "backup" when this Wi-Fi is the hotspot (a MiFi)


# --- pure parsers ----------------------------------------------------------------------------------


def parse_station(interface: str, reply: Mapping[str, Any]) -> WifiFacts:
    """One dumped NL80211_CMD_GET_STATION reply (``msg.dump()``) → facts for ``interface``."""
    info = attr(reply, "NL80211_ATTR_STA_INFO")
    if info is None:
        raise SourceParseError(f"nl80211 station of {interface}", "reply has no NL80211_ATTR_STA_INFO")
    signal = as_int(attr(info, "NL80211_STA_INFO_SIGNAL"))
    if signal is None:
        signal = as_int(attr(info, "NL80211_STA_INFO_SIGNAL_AVG"))
    rate = attr(info, "NL80211_STA_INFO_TX_BITRATE")
    # Both rate attributes count units of 100 kbit/s; BITRATE32 is the one that fits modern rates.
    units = as_int(attr(rate, "NL80211_RATE_INFO_BITRATE32"))
    if units is None:
        units = as_int(attr(rate, "NL80211_RATE_INFO_BITRATE"))
    return WifiFacts(
        interface=interface,
        connected=True,
        signal_dbm=float(signal) if signal is not None else None,
        bitrate_bps=units * 100_000.0 if units is not None else None,
        retries=as_int(attr(info, "NL80211_STA_INFO_TX_RETRIES")),
        backend="nl80211",
    )


def parse_proc_net_wireless(text: str) -> list[WifiFacts]:
    """``/proc/net/wireless`` → one entry per wireless interface (two header lines, then one per device).

    Columns: status, link quality, level (dBm on current drivers), noise, discarded nwid/crypt/frag/
    retry/misc, missed beacons. A trailing "." only marks an updated value.
    """
    out: list[WifiFacts] = []
    for number, line in enumerate(text.splitlines(), 1):
        if number <= 2 or not line.strip():
            continue
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) < 9:
            raise SourceParseError(f"{PROC_NET_WIRELESS}:{number}", f"expected 10 columns, got {line!r}")
        try:
            link, level = float(fields[1].rstrip(".")), float(fields[2].rstrip("."))
            retry = int(fields[7])
        except ValueError as exc:
            raise SourceParseError(f"{PROC_NET_WIRELESS}:{number}", f"not a number in {line!r}") from exc
        associated = link > 0 or level < 0
        out.append(
            WifiFacts(
                interface=name.strip(),
                connected=associated,
                signal_dbm=level if associated and level < 0 else None,
                retries=retry,
                backend="proc",
            )
        )
    return out


# --- backends --------------------------------------------------------------------------------------


class Nl80211Backend:
    """pyroute2 ``IW``: NL80211_CMD_GET_INTERFACE, then GET_STATION per interface. No privilege needed.

    The generic netlink socket (and its family lookup) is opened once and kept while reads succeed;
    any failure closes it, and the next read opens a fresh one. A lock makes each read one step,
    since the provider check runs on another thread than the reads.
    """

    name = "nl80211"

    def __init__(self, open_iw: Callable[[], Any] | None = None) -> None:
        self._open_iw = open_iw or _open_iw
        self._iw: Any = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._iw is not None:
            iw, self._iw = self._iw, None
            iw.close()

    def _dump(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            if self._iw is None:
                try:
                    self._iw = self._open_iw()
                except OSError as exc:  # ENOENT: the kernel has no nl80211 family
                    raise SourceUnavailable(f"nl80211 not available ({exc})") from exc
            iw = self._iw
            # Imported only once a radio exists: pyroute2 costs ~8 MB that a laptop without Wi-Fi keeps.
            from pyroute2.netlink.exceptions import NetlinkError

            try:
                interfaces: dict[str, Any] = iw.get_interfaces_dict()
                if not interfaces:
                    raise SourceUnavailable("no wireless interface")
                return {
                    name: [m.dump() for m in iw.get_stations(info[0])] for name, info in interfaces.items()
                }
            except (NetlinkError, OSError) as exc:
                self._drop()
                raise SourceReadError(f"nl80211: {exc}") from exc
            except SourceUnavailable:
                self._drop()
                raise

    def available(self) -> Availability:
        if not IS_LINUX:
            return Availability(False, "needs Linux")
        try:
            self._dump()
        except SourceError as exc:
            return Availability(False, exc.reason)
        return Availability(True)

    def read(self) -> list[WifiFacts]:
        out = []
        for name, replies in self._dump().items():
            # A managed-mode interface has one station: its access point. None = not associated.
            out.append(
                parse_station(name, replies[0]) if replies else WifiFacts(name, False, backend="nl80211")
            )
        return out


def _open_iw(radios: str = SYS_CLASS_IEEE80211) -> Any:
    """pyroute2 ``IW``, imported only when the kernel lists a radio under ``radios``.

    A generic netlink error becomes OSError (ENOENT: no nl80211 family) for ``_dump`` to report.
    """
    try:
        with os.scandir(radios) as entries:
            present = any(True for _ in entries)
    except OSError:  # cfg80211 not loaded: the folder is absent
        present = False
    if not present:
        raise SourceUnavailable(f"no wireless interface (no radio in {radios})")
    try:
        from pyroute2 import IW
        from pyroute2.netlink.exceptions import NetlinkError
    except ImportError as exc:
        raise SourceUnavailable("pyroute2 is not installed") from exc
    try:
        return IW()
    except NetlinkError as exc:
        raise OSError(exc.code, os.strerror(exc.code)) from exc


class ProcBackend:
    name = "proc"

    def __init__(self, path: str = PROC_NET_WIRELESS) -> None:
        self.path = path

    def _text(self) -> str:
        try:
            with open(self.path, encoding="ascii") as fh:
                return fh.read()
        except FileNotFoundError as exc:
            raise SourceUnavailable(f"{self.path} not present (no wireless extensions)") from exc
        except OSError as exc:
            raise SourceReadError(f"{self.path}: {exc.strerror}") from exc

    def available(self) -> Availability:
        try:
            if not parse_proc_net_wireless(self._text()):
                return Availability(False, "no wireless interface")
        except SourceError as exc:
            return Availability(False, exc.reason)
        return Availability(True)

    def read(self) -> list[WifiFacts]:
        out = parse_proc_net_wireless(self._text())
        if not out:
            raise SourceUnavailable("no wireless interface")
        return out


class FixtureBackend(FixtureReplay[list[WifiFacts]]):
    """Replays ``{"source": "wifi", "interface": …, "associated": …, "signal_dbm": …, …}`` lines."""

    section = "wifi"

    def facts(self, rec: Record) -> list[WifiFacts]:
        associated = rec.flag("associated")
        return [
            WifiFacts(
                interface=rec.text("interface", "wlan0"),
                connected=True if associated is None else associated,
                signal_dbm=rec.number("signal_dbm"),
                bitrate_bps=rec.number("bitrate_bps"),
                retries=rec.integer("retries"),
                backend="fixture",
            )
        ]


WifiBackend = Nl80211Backend | ProcBackend | FixtureBackend


# --- the source ------------------------------------------------------------------------------------


class WifiSource:
    name = "wifi"

    def __init__(self, backends: Sequence[WifiBackend], interface: str = "") -> None:
        self.backends = tuple(backends)
        self.interface = interface  # "" = the first associated wireless interface
        self._associated: bool | None = None

    def available(self) -> Availability:
        return first_available(self.backends)

    def close(self) -> None:
        for backend in self.backends:
            if isinstance(backend, Nl80211Backend):
                backend.close()

    def read(self) -> Reading[WifiFacts]:
        try:
            found, _ = read_first(self.backends, lambda b: b.read())
        except SourceError as exc:
            return Reading(error=exc.reason)
        facts = self._pick(found)
        if facts is None:
            return Reading(error=f"wireless interface {self.interface} not found")
        samples: list[SourceSample] = []
        if facts.signal_dbm is not None:
            samples.append(sample("lifeline_wifi_signal_dbm", facts.signal_dbm, interface=facts.interface))
        if facts.bitrate_bps is not None:
            samples.append(
                sample(
                    "lifeline_wifi_bitrate_bytes_per_second",
                    facts.bitrate_bps / 8.0,
                    interface=facts.interface,
                )
            )
        if facts.retries is not None:
            samples.append(sample("lifeline_wifi_retries_total", facts.retries, interface=facts.interface))
        events: list[SourceEvent] = []
        if self._associated is not None and facts.connected != self._associated:
            kind = "wifi.associated" if facts.connected else "wifi.disassociated"
            events.append(SourceEvent(kind, {"interface": facts.interface}))
        self._associated = facts.connected
        return Reading(tuple(samples), tuple(events), facts)

    def _pick(self, found: list[WifiFacts]) -> WifiFacts | None:
        if self.interface:
            return next((f for f in found if f.interface == self.interface), None)
        return next((f for f in found if f.connected), found[0] if found else None)


def _factory(config: AgentConfig, built: Mapping[str, Source]) -> Source | None:
    choice = config.providers.wifi
    if choice == "off":
        return None
    if choice == "fixture":
        return WifiSource([FixtureBackend(FixtureFile(config.providers.fixture_file))])
    if not IS_LINUX:
        return not_linux("wifi")
    backends: dict[str, WifiBackend] = {"nl80211": Nl80211Backend(), "proc": ProcBackend()}
    if choice in backends:
        return WifiSource([backends[choice]])
    return WifiSource(list(backends.values()))


SPEC = register(
    SourceSpec(
        kind="wifi",
        factory=_factory,
        metrics=(
            "lifeline_wifi_signal_dbm",
            "lifeline_wifi_bitrate_bytes_per_second",
            "lifeline_wifi_retries_total",
        ),
        backends=("nl80211", "proc", "fixture"),
        privileges="none",
        summary="signal, transmit bitrate and retries of the associated access point",
    )
)
