"""``lifeline_vpn_up``: a VPN tunnel carries traffic when a probe through it answers.

An interface that is up says nothing about the tunnel behind it; the probes that cross it (the
agency side, CAD, anything on the ``tunnel`` path) do. Nothing probing through the tunnel makes no
claim either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lifeline_agent.config import Target
from lifeline_agent.health.layers import target_layer
from lifeline_agent.probes.runner import TargetState
from lifeline_agent.recorder import Recorder
from lifeline_wire.layers import AGENCY_SIDE


def record_vpn_up(
    recorder: Recorder, vpn: Any, targets: Iterable[Target], states: Mapping[str, TargetState], ts: int
) -> None:
    """One sample per tunnel not known to be down; ``vpn`` is the VPN source's latest facts."""
    tunnels = getattr(vpn, "tunnels", ()) or ()
    if not tunnels:
        return
    inside = [
        t for t in targets if (target_layer(t) in AGENCY_SIDE and t.role != "vpn") or t.path == "tunnel"
    ]
    answered = [states[t.name].up for t in inside if t.name in states]
    if not any(up is not None for up in answered):
        return  # nothing probes through the tunnel: no claim either way
    carries = any(answered)
    for tunnel in tunnels:
        if tunnel.up is not False:
            labels = {"interface": tunnel.interface, "vpn_type": tunnel.vpn_type}
            recorder.sample("lifeline_vpn_up", 1.0 if carries else 0.0, labels, ts)
