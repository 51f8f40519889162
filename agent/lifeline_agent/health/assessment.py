"""What the health model says each second: the assessment, its layers, and what it reads of a probe.

Plain records, shared by the model that builds them, the words that render them
(:mod:`lifeline_agent.health.render`) and the events and samples that carry them off the laptop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from lifeline_agent.config import Target

NO_DATA = "no measurements yet"
# A parenthesised group holding a digit: the changing figures of a verdict ("(4.2 %)", "(RTT 80 ms)").
_NUMBERS = re.compile(r"\s*\([^()]*\d[^()]*\)")


class ProbeOutcome(Protocol):
    """What the model reads of a probe round (``lifeline_agent.probes.ProbeResult`` fits)."""

    @property
    def success(self) -> bool: ...
    @property
    def reason(self) -> str: ...
    @property
    def sent(self) -> int: ...
    @property
    def received(self) -> int: ...
    @property
    def rtt_avg(self) -> float | None: ...
    @property
    def jitter(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class LayerStatus:
    layer: str
    state: str  # ok | degraded | failed | unknown
    reason: str
    since: float  # Unix seconds when the layer entered this state
    cause: str = "none"  # what is wrong, one of lifeline_wire.layers.CAUSES


@dataclass(frozen=True, slots=True)
class PathScore:
    target: Target
    mos: float


@dataclass(frozen=True, slots=True)
class Assessment:
    at: float  # Unix seconds
    position: str
    layers: tuple[LayerStatus, ...]  # in LAYERS order
    verdict: str  # the first broken layer in words, or "healthy"
    verdict_layer: str  # that layer, or "none"
    verdict_state: str  # its state: ok (healthy), degraded or failed; unknown before any data
    backup_ready: bool | None  # None: no backup path is probed
    backup_rtt: float | None
    backup_loss: float | None
    backup_reason: str
    on_backup: bool
    risk: float  # 0..1
    risk_band: str  # low | watch | warn | page
    time_to_loss: float  # seconds; math.inf when stable
    risk_reason: str
    vpn_inferred: bool  # the VPN state was inferred from reachability (home VPN router)
    mos: tuple[PathScore, ...] = ()
    warning: str | None = None  # the dispatcher's local warning, None when there is nothing to do
    # What is wrong with the verdict's layer (lifeline_wire.layers.CAUSES): the field the collector
    # decides on; the verdict sentence is for people.
    verdict_cause: str = "none"

    def layer(self, name: str) -> LayerStatus:
        for status in self.layers:
            if status.layer == name:
                return status
        raise KeyError(name)

    @property
    def healthy(self) -> bool:
        return self.verdict_layer == "none"

    @property
    def verdict_label(self) -> str:
        """The verdict without its changing numbers: a stable label value and change key."""
        return _NUMBERS.sub("", self.verdict)
