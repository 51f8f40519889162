"""The probe registry: one module per probe kind, each registering a ProbeSpec.

The modules are imported here explicitly, so this file is the single list of probe kinds that
the runner, ``--help``, docs and contract tests read.
"""

from __future__ import annotations

from lifeline_agent.probes import dns, icmp, tcp
from lifeline_agent.probes.base import (
    REASONS,
    REGISTRY,
    ProbeContext,
    ProbeFunc,
    ProbeResult,
    ProbeSpec,
    register,
)

KINDS = (icmp.SPEC.kind, tcp.SPEC.kind, dns.SPEC.kind)

__all__ = [
    "KINDS",
    "REASONS",
    "REGISTRY",
    "ProbeContext",
    "ProbeFunc",
    "ProbeResult",
    "ProbeSpec",
    "register",
]
