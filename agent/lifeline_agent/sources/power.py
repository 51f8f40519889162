"""Power: mains present, battery charge and time left.

psutil's ``sensors_battery()`` knows only AC adapters named ``AC``/``AC0``, so every
``/sys/class/power_supply/*`` whose ``type`` is ``Mains`` is read as well (the sysfs root is a
parameter: tests use a fake tree). On a machine with neither a battery nor a mains supply the
source is unavailable, never "on AC".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifeline_agent.config import AgentConfig
from lifeline_agent.errors import SourceError, SourceParseError, SourceReadError, SourceUnavailable
from lifeline_agent.sources.base import (
    Availability,
    FixtureFile,
    FixtureReplay,
    Reading,
    Record,
    Source,
    SourceEvent,
    SourceSample,
    first_available,
    read_first,
    sample,
)
from lifeline_agent.sources.registry import SourceSpec, register

POWER_SUPPLY = "/sys/class/power_supply"


@dataclass(frozen=True, slots=True)
class MainsSupply:
    name: str
    online: bool


@dataclass(frozen=True, slots=True)
class PowerFacts:
    """What the power source read; the health model judges the power layer from this very record."""

    on_ac: bool | None = None  # None: the machine cannot tell
    percent: float | None = None  # battery charge 0..100; None: no battery
    secs_left: float | None = None  # battery time left; None: on AC, unknown, or no battery
    mains: tuple[MainsSupply, ...] = ()
    backend: str = ""


def read_mains(root: str | Path) -> list[MainsSupply]:
    """Every supply under ``root`` whose ``type`` is ``Mains``, with its ``online`` flag."""
    out: list[MainsSupply] = []
    base = Path(root)
    try:
        entries = sorted(base.iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise SourceReadError(f"{base}: {exc.strerror}") from exc
    for entry in entries:
        try:
            kind = (entry / "type").read_text(encoding="ascii").strip()
        except OSError:
            continue  # not a supply directory (or it vanished): nothing to read
        if kind != "Mains":
            continue
        try:
            online = (entry / "online").read_text(encoding="ascii").strip()
        except OSError as exc:
            raise SourceReadError(f"{entry / 'online'}: {exc.strerror}") from exc
        if online not in ("0", "1"):
            raise SourceParseError(str(entry / "online"), f"expected 0 or 1, got {online!r}")
        out.append(MainsSupply(entry.name, online == "1"))
    return out


def combine(battery: Any, mains: Sequence[MainsSupply]) -> PowerFacts:
    """psutil's ``sbattery`` (or None) plus the sysfs mains supplies → facts.

    A mains supply is the better witness of AC: psutil infers ``power_plugged`` from adapters named
    AC/AC0 or from the battery's charging status.
    """
    if battery is None and not mains:
        raise SourceUnavailable("no battery and no mains supply found")
    import psutil

    if mains:
        on_ac = any(m.online for m in mains)
    elif battery.power_plugged is not None:
        on_ac = bool(battery.power_plugged)
    else:
        raise SourceUnavailable("battery present but AC state unknown")
    percent = float(battery.percent) if battery is not None else None
    left: float | None = None
    if (
        battery is not None
        and not on_ac
        and battery.secsleft
        not in (
            psutil.POWER_TIME_UNKNOWN,
            psutil.POWER_TIME_UNLIMITED,
        )
    ):
        left = float(battery.secsleft)
    return PowerFacts(on_ac=on_ac, percent=percent, secs_left=left, mains=tuple(mains))


class PsutilBackend:
    name = "psutil"

    def __init__(self, sysfs_root: str = POWER_SUPPLY, battery: Callable[[], Any] | None = None) -> None:
        self.sysfs_root = sysfs_root
        self._battery = battery  # None: psutil.sensors_battery (tests pass a recorded reading)

    def _read_battery(self) -> Any:
        if self._battery is not None:
            return self._battery()
        import psutil

        return psutil.sensors_battery()

    def available(self) -> Availability:
        try:
            self.read()
        except SourceError as exc:
            return Availability(False, exc.reason)
        return Availability(True)

    def read(self) -> PowerFacts:
        facts = combine(self._read_battery(), read_mains(self.sysfs_root))
        return PowerFacts(facts.on_ac, facts.percent, facts.secs_left, facts.mains, "psutil")


class FixtureBackend(FixtureReplay[PowerFacts]):
    """Replays ``{"source": "power", "on_ac": false, "battery_percent": 64, "seconds_left": 5400}``."""

    section = "power"

    def facts(self, rec: Record) -> PowerFacts:
        on_ac = rec.flag("on_ac")
        ratio = rec.number("battery_ratio")
        return PowerFacts(
            on_ac=True if on_ac is None else on_ac,
            percent=None if ratio is None else ratio * 100.0,
            secs_left=rec.number("secs_left"),
            backend="fixture",
        )


PowerBackend = PsutilBackend | FixtureBackend


class PowerSource:
    name = "power"

    def __init__(self, backends: Sequence[PowerBackend]) -> None:
        self.backends = tuple(backends)
        self._on_ac: bool | None = None

    def available(self) -> Availability:
        return first_available(self.backends)

    def read(self) -> Reading[PowerFacts]:
        try:
            facts, _ = read_first(self.backends, lambda b: b.read())
        except SourceError as exc:
            return Reading(error=exc.reason)
        samples: list[SourceSample] = [sample("lifeline_power_on_ac", 1.0 if facts.on_ac else 0.0)]
        if facts.percent is not None:
            samples.append(sample("lifeline_battery_ratio", facts.percent / 100.0))
        if facts.secs_left is not None:
            samples.append(sample("lifeline_battery_time_left_seconds", facts.secs_left))
        events: list[SourceEvent] = []
        if self._on_ac is not None and facts.on_ac != self._on_ac:
            attributes: dict[str, str | int | float | bool] = {}
            if facts.percent is not None:
                attributes["battery_percent"] = facts.percent
            events.append(SourceEvent("power.ac_restored" if facts.on_ac else "power.ac_lost", attributes))
        self._on_ac = facts.on_ac
        return Reading(tuple(samples), tuple(events), facts)


def _factory(config: AgentConfig, built: Mapping[str, Source]) -> Source | None:
    choice = config.providers.power
    if choice == "off":
        return None
    if choice == "fixture":
        return PowerSource([FixtureBackend(FixtureFile(config.providers.fixture_file))])
    return PowerSource([PsutilBackend()])  # psutil works on every platform; sysfs is simply absent


SPEC = register(
    SourceSpec(
        kind="power",
        factory=_factory,
        metrics=("lifeline_power_on_ac", "lifeline_battery_ratio", "lifeline_battery_time_left_seconds"),
        backends=("psutil", "fixture"),
        privileges="none",
        summary="mains present (psutil and sysfs Mains supplies), battery charge and time left",
    )
)
