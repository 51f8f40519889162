"""Cellular: access technology, signal quality and LTE/5G RSRP/RSRQ/SINR from ModemManager.

Backends, in the order ``auto`` tries them: ModemManager's D-Bus objects (one
``GetManagedObjects`` call through ``busctl --json``), ``mmcli -K``, and a fixture file. Detailed
RSRP/RSRQ/SNR exist only after ``Signal.Setup(rate)`` (polkit permission); without it only the
signal quality percentage is known. A phone hotspot is invisible here: probes through it judge it.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lifeline_agent.config import AgentConfig
from lifeline_agent.errors import SourceError, SourceParseError, SourceUnavailable
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
    run_tool,
    sample,
)
from lifeline_agent.sources.registry import SourceSpec, register

MM_SERVICE = "org.freedesktop.ModemManager1"
MM_MODEM = "org.freedesktop.ModemManager1.Modem"
MM_SIGNAL = "org.freedesktop.ModemManager1.Modem.Signal"
STATE_CONNECTED = 11

# MMModemState (ModemManager-enums.h)
MM_STATES = {
    -1: "failed",
    0: "unknown",
    1: "initializing",
    2: "locked",
    3: "disabled",
    4: "disabling",
    5: "enabling",
    6: "enabled",
    7: "searching",
    8: "registered",
    9: "disconnecting",
    10: "connecting",
    11: "connected",
}
# MMModemAccessTechnology bits → the closed label set (2g, 3g, lte, 5g, unknown).
_TECH_BITS: tuple[tuple[int, str, str], ...] = (
    (1 << 1, "gsm", "2g"),
    (1 << 2, "gsm-compact", "2g"),
    (1 << 3, "gprs", "2g"),
    (1 << 4, "edge", "2g"),
    (1 << 5, "umts", "3g"),
    (1 << 6, "hsdpa", "3g"),
    (1 << 7, "hsupa", "3g"),
    (1 << 8, "hspa", "3g"),
    (1 << 9, "hspa-plus", "3g"),
    (1 << 10, "1xrtt", "2g"),
    (1 << 11, "evdo0", "3g"),
    (1 << 12, "evdoa", "3g"),
    (1 << 13, "evdob", "3g"),
    (1 << 14, "lte", "lte"),
    (1 << 15, "5gnr", "5g"),
    (1 << 16, "lte-cat-m", "lte"),
    (1 << 17, "lte-nb-iot", "lte"),
)
_GENERATION = {name: gen for _, name, gen in _TECH_BITS}
_RANK = ("unknown", "2g", "3g", "lte", "5g")
# The lab's fixture files name access technologies as ModemManager does.
_LAB_TECHNOLOGY = {"gsm": "2g", "umts": "3g", "hspa": "3g", "5gnr": "5g", "none": "unknown"}


@dataclass(frozen=True, slots=True)
class CellularFacts:
    """What the cellular source read; the health model judges the backup path from this very record."""

    modem: str = ""  # ModemManager's index ("0"), bounded by the hardware
    connected: bool | None = None
    access_technology: str = ""  # 5g | lte | 3g | 2g | unknown (the best of the current set)
    rsrp: float | None = None  # dBm
    rsrq: float | None = None  # dB
    sinr: float | None = None  # dB
    signal_quality: float | None = None  # 0..1
    state: str = ""  # a name from MMModemState
    backend: str = ""


# --- pure parsers ----------------------------------------------------------------------------------


def access_technologies_from_mask(mask: int) -> tuple[str, ...]:
    """ModemManager's AccessTechnologies bitmask → technology names (LTE 1<<14, 5G NR 1<<15 …)."""
    return tuple(name for bit, name, _ in _TECH_BITS if mask & bit)


def generation(technologies: Sequence[str]) -> str:
    """The best generation among ``technologies`` (the bounded label value)."""
    best = "unknown"
    for tech in technologies:
        gen = _GENERATION.get(tech.strip().lower(), "unknown")
        if _RANK.index(gen) > _RANK.index(best):
            best = gen
    return best


def parse_mmcli_keyvalues(text: str) -> dict[str, str]:
    """``mmcli -K`` output (``key : value`` lines, ``--`` for none) → a dict without the empty values."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip() or " " in key.strip():
            raise SourceParseError(f"mmcli line {number}", f"expected 'key : value', got {line!r}")
        value = value.strip()
        if value and value != "--":
            out[key.strip()] = value
    return out


def _values(kv: Mapping[str, str], key: str) -> list[str]:
    """A list-valued mmcli key: ``key.value[N]`` entries, or one comma-separated ``key`` (older mmcli)."""
    listed = [v for k, v in kv.items() if k.startswith(f"{key}.value[")]
    raw = listed or ([kv[key]] if key in kv else [])
    return [part.strip() for item in raw for part in item.split(",") if part.strip()]


def _number(kv: Mapping[str, str], key: str) -> float | None:
    value = kv.get(key)
    if value is None:
        return None
    try:
        out = float(value)
    except ValueError as exc:
        raise SourceParseError(key, f"not a number: {value!r}") from exc
    return out if math.isfinite(out) else None


def cellular_from_mmcli(modem_kv: Mapping[str, str], signal_kv: Mapping[str, str]) -> CellularFacts:
    """``mmcli -m N -K`` and ``mmcli -m N --signal-get -K`` (parsed) → facts."""
    path = modem_kv.get("modem.dbus-path", "")
    if not path:
        raise SourceParseError("modem.dbus-path", "missing: not a modem description")
    state = modem_kv.get("modem.generic.state", "unknown")
    techs = _values(modem_kv, "modem.generic.access-technologies")
    quality = _number(modem_kv, "modem.generic.signal-quality.value")
    gen = generation(techs)
    prefix = "modem.signal.5g" if gen == "5g" and "modem.signal.5g.rsrp" in signal_kv else "modem.signal.lte"
    return CellularFacts(
        modem=path.rsplit("/", 1)[-1],
        state=state,
        connected=state == "connected",
        access_technology=gen,
        signal_quality=quality / 100.0 if quality is not None else None,
        rsrp=_number(signal_kv, f"{prefix}.rsrp"),
        rsrq=_number(signal_kv, f"{prefix}.rsrq"),
        sinr=_number(signal_kv, f"{prefix}.snr"),
        backend="mmcli",
    )


def _variant(value: Any) -> Any:
    """busctl's JSON wraps every variant as ``{"type": …, "data": …}``."""
    if isinstance(value, Mapping) and "data" in value and "type" in value:
        return value["data"]
    return value


def _signal_number(props: Mapping[str, Any], key: str) -> float | None:
    value = _variant(props.get(key))
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def cellular_from_dbus(path: str, interfaces: Mapping[str, Mapping[str, Any]]) -> CellularFacts:
    """One modem object of ModemManager's ``GetManagedObjects`` (interface → property → value)."""
    modem = interfaces.get(MM_MODEM)
    if modem is None:
        raise SourceParseError(path, f"no {MM_MODEM} interface")
    state_code = _variant(modem.get("State"))
    mask = _variant(modem.get("AccessTechnologies"))
    quality = _variant(modem.get("SignalQuality"))  # (ub): percent, recent
    if not isinstance(state_code, int) or not isinstance(mask, int):
        raise SourceParseError(f"{path}.State", "State and AccessTechnologies must be integers")
    gen = generation(access_technologies_from_mask(mask))
    signal = interfaces.get(MM_SIGNAL, {})
    lte = _variant(signal.get("Lte")) or {}
    nr = _variant(signal.get("Nr5g")) or {}
    chosen = nr if gen == "5g" and _signal_number(nr, "rsrp") is not None else lte
    percent = quality[0] if isinstance(quality, list | tuple) and quality else None
    return CellularFacts(
        modem=path.rsplit("/", 1)[-1],
        state=MM_STATES.get(state_code, "unknown"),
        connected=state_code == STATE_CONNECTED,
        access_technology=gen,
        signal_quality=percent / 100.0 if isinstance(percent, int) else None,
        rsrp=_signal_number(chosen, "rsrp"),
        rsrq=_signal_number(chosen, "rsrq"),
        sinr=_signal_number(chosen, "snr"),
        backend="modemmanager",
    )


def parse_managed_objects(reply: Mapping[str, Any]) -> list[CellularFacts]:
    """``busctl --json=short call … GetManagedObjects`` → facts per modem object."""
    data = reply.get("data")
    if not isinstance(data, list) or not data or not isinstance(data[0], Mapping):
        raise SourceParseError("GetManagedObjects", 'expected {"type": …, "data": [{path: …}]}')
    return [
        cellular_from_dbus(path, interfaces)
        for path, interfaces in sorted(data[0].items())
        if isinstance(interfaces, Mapping) and MM_MODEM in interfaces
    ]


# --- backends --------------------------------------------------------------------------------------


def _run(argv: list[str], timeout: float) -> str:
    done = run_tool(argv, timeout)
    if done.returncode != 0:
        message = (done.stderr.strip() or done.stdout.strip()).splitlines()
        reason = message[-1] if message else f"exit status {done.returncode}"
        raise SourceUnavailable(f"{' '.join(argv[:2])}: {reason}")
    return done.stdout


class DbusBackend:
    """ModemManager over D-Bus, via ``busctl`` (systemd) so the agent needs no D-Bus binding."""

    name = "modemmanager"

    def __init__(self, timeout: float = 2.0) -> None:
        self.timeout = timeout

    def available(self) -> Availability:
        if shutil.which("busctl") is None:
            return Availability(False, "busctl not installed")
        try:
            if not self.read():
                return Availability(False, "ModemManager reports no modem")
        except SourceError as exc:
            return Availability(False, exc.reason)
        return Availability(True)

    def read(self) -> list[CellularFacts]:
        text = _run(
            [
                "busctl",
                "--system",
                "--json=short",
                "call",
                MM_SERVICE,
                "/org/freedesktop/ModemManager1",
                "org.freedesktop.DBus.ObjectManager",
                "GetManagedObjects",
            ],
            self.timeout,
        )
        try:
            reply = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SourceParseError("busctl output", f"not JSON ({exc.msg})") from exc
        return parse_managed_objects(reply)


class MmcliBackend:
    name = "mmcli"

    def __init__(self, timeout: float = 3.0) -> None:
        self.timeout = timeout

    def available(self) -> Availability:
        if shutil.which("mmcli") is None:
            return Availability(False, "mmcli not installed (ModemManager)")
        try:
            if not self._modems():
                return Availability(False, "ModemManager reports no modem")
        except SourceError as exc:
            return Availability(False, exc.reason)
        return Availability(True)

    def _modems(self) -> list[str]:
        kv = parse_mmcli_keyvalues(_run(["mmcli", "-L", "-K"], self.timeout))
        return [path.rsplit("/", 1)[-1] for path in _values(kv, "modem-list")]

    def read(self) -> list[CellularFacts]:
        out = []
        for index in self._modems():
            modem = parse_mmcli_keyvalues(_run(["mmcli", "-m", index, "-K"], self.timeout))
            try:
                signal = parse_mmcli_keyvalues(
                    _run(["mmcli", "-m", index, "--signal-get", "-K"], self.timeout)
                )
            except SourceUnavailable:
                signal = {}  # Signal.Setup was never allowed: only the quality percentage is known
            out.append(cellular_from_mmcli(modem, signal))
        return out


class FixtureBackend(FixtureReplay[list[CellularFacts]]):
    """Replays ``{"source": "cellular", "state": "connected", "access_technology": "lte", "rsrp_dbm": …}``."""

    section = "cellular"

    def facts(self, rec: Record) -> list[CellularFacts]:
        state = rec.text("state", "connected")
        tech = _LAB_TECHNOLOGY.get(rec.text("access_technology", "lte"), rec.text("access_technology", "lte"))
        if tech not in _RANK:
            raise SourceParseError("access_technology", f"must be one of {', '.join(_RANK)} (got {tech!r})")
        return [
            CellularFacts(
                modem=rec.text("modem", "0"),
                state=state,
                connected=state == "connected",
                access_technology=tech,
                signal_quality=rec.number("signal_quality"),
                rsrp=rec.number("rsrp_dbm"),
                rsrq=rec.number("rsrq_db"),
                sinr=rec.number("sinr_db"),
                backend="fixture",
            )
        ]


CellularBackend = DbusBackend | MmcliBackend | FixtureBackend


class CellularSource:
    name = "cellular"

    def __init__(self, backends: Sequence[CellularBackend]) -> None:
        self.backends = tuple(backends)
        self._last: tuple[bool, str] | None = None

    def available(self) -> Availability:
        return first_available(self.backends)

    def read(self) -> Reading[CellularFacts]:
        try:
            modems, _ = read_first(self.backends, lambda b: b.read())
        except SourceError as exc:
            return Reading(error=exc.reason)
        if not modems:
            return Reading(error="no modem")
        facts = modems[0]  # the agent watches one modem: the backup path
        samples: list[SourceSample] = []
        if facts.signal_quality is not None:
            samples.append(
                sample(
                    "lifeline_cellular_signal_quality_ratio",
                    facts.signal_quality,
                    modem=facts.modem,
                    access_technology=facts.access_technology,
                )
            )
        for name, value in (
            ("lifeline_cellular_rsrp_dbm", facts.rsrp),
            ("lifeline_cellular_rsrq_db", facts.rsrq),
            ("lifeline_cellular_sinr_db", facts.sinr),
        ):
            if value is not None:
                samples.append(sample(name, value, modem=facts.modem))
        samples.append(
            sample("lifeline_cellular_connected", 1.0 if facts.connected else 0.0, modem=facts.modem)
        )
        events: list[SourceEvent] = []
        now = (facts.connected is True, facts.access_technology)
        if self._last is not None and now != self._last:
            events.append(
                SourceEvent(
                    "cellular.changed",
                    {
                        "modem": facts.modem,
                        "state": facts.state,
                        "access_technology": facts.access_technology,
                        "was_connected": self._last[0],
                        "was_access_technology": self._last[1],
                    },
                )
            )
        self._last = now
        return Reading(tuple(samples), tuple(events), facts)


def _factory(config: AgentConfig, built: Mapping[str, Source]) -> Source | None:
    choice = config.providers.cellular
    if choice == "off":
        return None
    if choice == "fixture":
        return CellularSource([FixtureBackend(FixtureFile(config.providers.fixture_file))])
    if not IS_LINUX:
        return not_linux("cellular")
    if choice == "modemmanager":
        return CellularSource([DbusBackend()])
    if choice == "mmcli":
        return CellularSource([MmcliBackend()])
    return CellularSource([DbusBackend(), MmcliBackend()])


SPEC = register(
    SourceSpec(
        kind="cellular",
        factory=_factory,
        metrics=(
            "lifeline_cellular_signal_quality_ratio",
            "lifeline_cellular_rsrp_dbm",
            "lifeline_cellular_rsrq_db",
            "lifeline_cellular_sinr_db",
            "lifeline_cellular_connected",
        ),
        backends=("modemmanager", "mmcli", "fixture"),
        privileges="D-Bus access to ModemManager; detailed RSRP/RSRQ/SNR need polkit for Signal.Setup",
        summary="access technology, signal quality, RSRP/RSRQ/SINR, connection state of a WWAN modem",
    )
)
