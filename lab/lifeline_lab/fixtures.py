"""The fixture file: Wi-Fi, cellular and power readings for hardware the lab cannot emulate.

The lab has no radio and no battery, so scenarios write what those would read and the agent's
fixture backends (``[providers] wifi = "fixture"`` …, ``fixture_file = <path>``) replay it.
Standard library only, so any backend can import it.

Format: JSON lines, one reading per line, in any order::

    {"ts_ms": 1718000000000,
     "wifi": {"interface": "eth0", "signal_dbm": -55, "bitrate_bps": 144e6, "retries": 0},
     "cellular": {"modem": "0", "access_technology": "lte", "signal_quality": 0.8,
                  "rsrp_dbm": -90, "rsrq_db": -10, "sinr_db": 15},
     "power": {"on_ac": true, "battery_ratio": 0.95, "secs_left": null}}

* ``ts_ms`` (required): Unix time in milliseconds from which the line applies. Lines may lie in
  the future: a scenario writes its whole timeline when it starts.
* ``wifi``, ``cellular``, ``power`` are each optional. **Each section is replayed on its own**:
  at time *now* the value of a section is the section of the latest line with ``ts_ms <= now``
  that has it. A section set to ``null`` means "this hardware is gone" (no Wi-Fi, no modem).
* Inside a section every field is optional; ``null`` means "not reported". Units are the
  catalog's: dBm, dB, bits per second, a 0–1 ratio, seconds.
* In the lab the laptop's primary link is ``eth0``; scenarios name it as the Wi-Fi interface, so
  the Wi-Fi readings describe the primary path.

``at(readings, now_ms)`` implements the replay rule; ``validate`` names each bad field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

SECTIONS: dict[str, dict[str, tuple[type, ...]]] = {
    "wifi": {
        "interface": (str,),
        "signal_dbm": (int, float),
        "bitrate_bps": (int, float),
        "retries": (int,),
    },
    "cellular": {
        "modem": (str,),
        "access_technology": (str,),
        "signal_quality": (int, float),
        "rsrp_dbm": (int, float),
        "rsrq_db": (int, float),
        "sinr_db": (int, float),
    },
    "power": {
        "on_ac": (bool,),
        "battery_ratio": (int, float),
        "secs_left": (int, float),
    },
}
ACCESS_TECHNOLOGIES = ("gsm", "umts", "hspa", "lte", "5gnr", "none")
RATIOS = ("signal_quality", "battery_ratio")

HEALTHY: dict[str, dict[str, Any]] = {
    "wifi": {"interface": "eth0", "signal_dbm": -52, "bitrate_bps": 300e6, "retries": 0},
    "cellular": {
        "modem": "0",
        "access_technology": "lte",
        "signal_quality": 0.8,
        "rsrp_dbm": -88,
        "rsrq_db": -9,
        "sinr_db": 18,
    },
    "power": {"on_ac": True, "battery_ratio": 1.0, "secs_left": None},
}


def validate(reading: Mapping[str, Any], where: str = "") -> list[tuple[str, str]]:
    """Every problem of one reading as ``(dotted path, reason)``; empty when it is valid."""
    problems: list[tuple[str, str]] = []
    prefix = f"{where}." if where else ""
    ts = reading.get("ts_ms")
    if isinstance(ts, bool) or not isinstance(ts, int):
        problems.append((f"{prefix}ts_ms", f"must be an integer of Unix milliseconds (got {ts!r})"))
    for key, value in reading.items():
        if key == "ts_ms":
            continue
        if key not in SECTIONS:
            problems.append((f"{prefix}{key}", f"unknown section (known: {', '.join(SECTIONS)})"))
            continue
        if value is None:
            continue
        if not isinstance(value, Mapping):
            problems.append((f"{prefix}{key}", "must be a table or null"))
            continue
        problems += validate_section(key, value, f"{prefix}{key}")
    return problems


def validate_section(section: str, values: Mapping[str, Any], where: str) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    spec = SECTIONS[section]
    for name, value in values.items():
        path = f"{where}.{name}"
        if name not in spec:
            problems.append((path, f"unknown field (known: {', '.join(spec)})"))
            continue
        if value is None:
            continue
        kinds = spec[name]
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            what = "true or false" if bool in kinds else "a string" if str in kinds else "a number"
            problems.append((path, f"must be {what} or null (got {value!r})"))
            continue
        if name in RATIOS and isinstance(value, int | float) and not 0.0 <= value <= 1.0:
            problems.append((path, f"must be between 0 and 1 (got {value!r})"))
        if name == "access_technology" and value not in ACCESS_TECHNOLOGIES:
            problems.append((path, f"must be one of {', '.join(ACCESS_TECHNOLOGIES)} (got {value!r})"))
    return problems


def write(path: str, readings: Iterable[Mapping[str, Any]], *, append: bool = False) -> int:
    """Write readings (sorted by time) as JSON lines; returns how many. Atomic when not appending."""
    lines = sorted(readings, key=lambda r: int(r["ts_ms"]))
    for index, reading in enumerate(lines):
        problems = validate(reading, f"[{index}]")
        if problems:
            raise ValueError("; ".join(f"{p}: {r}" for p, r in problems))
    text = "".join(json.dumps(dict(r), sort_keys=True) + "\n" for r in lines)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if append:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)
    else:
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    return len(lines)


def read(path: str) -> list[dict[str, Any]]:
    """Every valid reading of a fixture file; bad lines are skipped (the replay must not crash)."""
    out: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict) and not validate(item):
                    out.append(item)
    except FileNotFoundError:
        pass
    return out


def at(readings: Iterable[Mapping[str, Any]], now_ms: int) -> dict[str, dict[str, Any] | None]:
    """The replayed value of each section at ``now_ms``: its latest reading at or before then.

    A section no reading has yet is absent from the result; one whose latest reading is ``null``
    maps to None.
    """
    best: dict[str, tuple[int, dict[str, Any] | None]] = {}
    for reading in readings:
        ts = int(reading["ts_ms"])
        if ts > now_ms:
            continue
        for section in SECTIONS:
            if section in reading and (section not in best or ts >= best[section][0]):
                value = reading[section]
                best[section] = (ts, dict(value) if value is not None else None)
    return {section: value for section, (_ts, value) in best.items()}
