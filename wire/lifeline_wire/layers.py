"""The layers between a dispatcher and CAD, what can be wrong with each, and the words for them.

One vocabulary for the agent that judges the layers, the collector that pages on them and the lab
that breaks them: they share it through these names, never by reading each other's sentences.

A packet to CAD travels power → link → router → internet → vpn → agency → dns → cad; ``backup``
stands beside that chain (is the hotspot ready to carry the position?).
"""

from __future__ import annotations

from collections.abc import Mapping

CHAIN = ("power", "link", "router", "internet", "vpn", "agency", "dns", "cad")
LAYERS = (*CHAIN, "backup")
CAD_PATH = CHAIN[1:]  # the layers CAD traffic crosses, home side first (power is not on the way)
HOME_SIDE = ("link", "router", "internet")  # in the house: what goes down with the home's mains
# Beyond the home, reached through the tunnel: shared by many positions, and their loss and delay
# are CAD's own.
AGENCY_SIDE = ("vpn", "agency", "dns", "cad")

# What a layer is called in a list of layers (the status screen, the board).
TITLES = {
    "power": "Power",
    "link": "Home network",
    "router": "Home router",
    "internet": "Internet (ISP)",
    "vpn": "VPN tunnel",
    "agency": "Agency network",
    "dns": "Agency DNS",
    "cad": "CAD server",
    "backup": "Backup path",
}
# The subject of a sentence about a degraded layer: "<subject> losing packets (4.2 %)".
SUBJECTS = {
    "link": "home network",
    "router": "home router",
    "internet": "home internet (ISP)",
    "vpn": "VPN tunnel",
    "agency": "agency network",
    "dns": "agency DNS",
    "cad": "CAD connection",
    "backup": "backup path (hotspot)",
}
# A failed layer in words: the agent's plain verdict, and the collector's when the agent's is missing.
FAILED_TEXT = {
    "power": "laptop battery almost empty — home power out",
    "link": "home network link down",
    "router": "home router unreachable",
    "internet": "home internet (ISP) down",
    "vpn": "VPN tunnel down",
    "agency": "agency network unreachable through the tunnel",
    "dns": "agency DNS not answering",
    "cad": "CAD server not answering",
    "backup": "backup path (hotspot) not ready",
}

# What is wrong with the verdict's layer: the ``cause`` label of ``lifeline_verdict_info``. A closed
# set — a reader that meets a value it does not know (a newer agent) treats it as ``unknown``.
CAUSES = {
    "none": "nothing is wrong, or nothing is measured yet",
    "down": "the layer carries no traffic: link down, nothing answers, a port refused",
    "loss": "the layer loses packets",
    "silent": "some of the layer's targets stopped answering while others still do",
    "latency": "round trips through the layer are slow",
    "jitter": "delay through the layer is unsteady",
    "voice": "the layer's quality is poor for voice (MOS)",
    "slow_answer": "services behind the layer are slow to answer (TCP connect, DNS)",
    "signal": "a radio is weak (Wi-Fi, cellular)",
    "power": "home power is out: the laptop runs on its battery",
    "handshake": "the VPN handshake is overdue",
    "trend": "no layer is broken yet, but the trend says CAD is at risk",
    "unknown": "the sender did not say (an older agent) or said something this reader does not know",
}
# Causes that are about how well a layer carries traffic rather than whether it does.
QUALITY_CAUSES = ("latency", "jitter", "voice", "slow_answer")
# The verb phrase of a degraded layer, by cause: "<subject> <phrase> (<figure>)".
PHRASES = {
    "loss": "losing packets",
    "latency": "slow",
    "jitter": "unsteady",
    "voice": "poor for voice",
    "slow_answer": "slow to answer",
}


def cause_of(value: str | None) -> str:
    """A cause as read off the wire: one of :data:`CAUSES`, ``unknown`` when absent or foreign."""
    return value if value in CAUSES else "unknown"


def degraded_text(layer: str, cause: str, figure: str = "") -> str:
    """A degraded layer in words from its fields: "home network losing packets (4.2 %)"."""
    text = f"{SUBJECTS[layer]} {PHRASES[cause]}"
    return f"{text} ({figure})" if figure else text


def layer_of(role: str, path: str) -> str:
    """The layer a probe speaks for, from its target's role and path.

    A target on the backup path speaks for the backup; a host beyond the VPN gateway that is
    neither DNS nor CAD (a role of the home side, probed through the tunnel) for the agency
    network; every other target for its role. ``gateway`` is the router's older role name.
    """
    role = "router" if role == "gateway" else role
    if path == "backup":
        return "backup"
    if path == "tunnel" and role in HOME_SIDE:
        return "agency"
    return role


def series_layer(labels: Mapping[str, str]) -> str:
    """The layer a probe series speaks for, from its ``role`` and ``path`` labels."""
    return layer_of(labels.get("role", ""), labels.get("path", ""))


def pct(ratio: float) -> str:
    """A ratio as a person reads it: "0 %", "4.2 %", "18 %"."""
    value = ratio * 100
    if value == 0:
        return "0 %"
    return f"{value:.1f} %" if value < 10 else f"{value:.0f} %"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"
