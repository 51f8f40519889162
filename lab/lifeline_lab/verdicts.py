"""How the lab breaks each layer of the agent's chain, and whether the agent's verdict names it.

The ground truth a test judges the agent against: the break it made (``BREAKS``), the fixture
readings it wrote, and the moments the CAD simulator declared CAD lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from lifeline_lab import fixtures, impair
from lifeline_lab.topology import Lab
from lifeline_wire.layers import CHAIN


def on_battery(lab: Lab, battery_ratio: float = 0.12, secs_left: float = 600.0) -> None:
    """Mains power gone from now on, with the battery nearly empty."""
    reading = {"on_ac": False, "battery_ratio": battery_ratio, "secs_left": secs_left}
    fixtures.write(lab.fixture_path, [{"ts_ms": int(time.time() * 1000), "power": reading}], append=True)


# How the lab breaks each layer of the agent's chain (and the backup path).
BREAKS: dict[str, Callable[[Lab], None]] = {
    "power": on_battery,
    "link": lambda lab: impair.apply(lab, impair.make("cable-pull", "primary")),
    "router": lambda lab: impair.apply(lab, impair.make("blackhole", "primary")),  # hung, carrier up
    "internet": lambda lab: impair.apply(lab, impair.make("blackhole", "broadband")),
    "vpn": lambda lab: impair.apply(lab, impair.make("vpn-block", "hub")),
    "agency": lambda lab: impair.apply(lab, impair.make("blackhole", "agency")),
    "dns": lambda lab: impair.apply(lab, impair.make("dns-fail", mode="stop")),
    "cad": lambda lab: impair.apply(lab, impair.make("cad-down")),
    "backup": lambda lab: impair.apply(lab, impair.make("blackhole", "cellular")),
}


def verdict_problems(assessment: dict[str, Any], layer: str, words: str) -> list[str]:
    """Why an assessment does not name ``layer`` (in ``words``) and no other; empty when it does.

    The verdict is the layer and starts with its words; every layer before it on the way to CAD
    is ok (nothing upstream is blamed or hidden); the untouched backup path is ok.
    """
    out = []
    if assessment.get("verdict_layer") != layer:
        out.append(f"verdict layer {assessment.get('verdict_layer')!r}, expected {layer!r}")
    if not str(assessment.get("verdict", "")).startswith(words):
        out.append(f"verdict {assessment.get('verdict')!r} does not start with {words!r}")
    states = {s["layer"]: s["state"] for s in assessment.get("layers", [])}
    for name in (*CHAIN[: CHAIN.index(layer)], "backup"):
        if states.get(name) != "ok":
            out.append(f"{name} is {states.get(name)!r}, expected ok")
    return out


def healthy_fixtures(lab: Lab) -> None:
    """Wi-Fi, hotspot modem and power readings of a healthy home, from now on."""
    fixtures.write(lab.fixture_path, [{"ts_ms": int(time.time() * 1000), **fixtures.HEALTHY}])


def cad_losses(lab: Lab, since: float = 0.0) -> list[float]:
    """Wall times at which the CAD simulator declared CAD lost (its ground truth)."""
    return [float(e["ts"]) for e in lab.cad_events() if e.get("event") == "lost" and float(e["ts"]) >= since]
