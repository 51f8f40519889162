"""Pure arithmetic over probe results: RTT summary, RFC 3550 jitter, loss, and MOS (E-model).

No sockets and no clocks here, so every formula is unit-tested with published reference values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RttSummary:
    min: float
    avg: float
    max: float


def summarize(rtts: Iterable[float | None]) -> RttSummary | None:
    """min/avg/max of the echoes that came back, or None if none did."""
    got = [r for r in rtts if r is not None]
    if not got:
        return None
    return RttSummary(min(got), sum(got) / len(got), max(got))


def loss_ratio(sent: int, received: int) -> float:
    """Share of probes lost (0..1); 0 when nothing was sent."""
    if sent <= 0:
        return 0.0
    return min(1.0, max(0.0, (sent - received) / sent))


class JitterEstimator:
    """RFC 3550 §6.4.1 interarrival jitter over consecutive RTTs: ``J += (|D| - J) / 16``.

    Kept per target across rounds (a round of one echo has no pair of its own); lost echoes are
    skipped, so D is always between two replies that came back.
    """

    __slots__ = ("_last", "jitter")

    def __init__(self) -> None:
        self._last: float | None = None
        self.jitter = 0.0

    def update(self, rtt: float | None) -> float:
        if rtt is None:
            return self.jitter
        if self._last is not None:
            self.jitter += (abs(rtt - self._last) - self.jitter) / 16.0
        self._last = rtt
        return self.jitter

    def update_many(self, rtts: Iterable[float | None]) -> float:
        for rtt in rtts:
            self.update(rtt)
        return self.jitter

    @property
    def primed(self) -> bool:
        """True once at least one reply has been seen (jitter is 0 until there is a pair)."""
        return self._last is not None


def jitter(rtts: Iterable[float | None]) -> float:
    """The RFC 3550 estimate after feeding ``rtts`` in order to a fresh estimator."""
    return JitterEstimator().update_many(rtts)


def r_factor(rtt_ms: float, jitter_ms: float, loss_percent: float) -> float:
    """Simplified ITU-T G.107 E-model R from round-trip time, jitter and loss."""
    effective = rtt_ms + 2.0 * jitter_ms + 10.0
    r = 93.2 - effective / 40.0 if effective < 160.0 else 93.2 - (effective - 120.0) / 10.0
    r -= 2.5 * loss_percent
    return min(100.0, max(0.0, r))


def mos(rtt: float, jitter_s: float, loss: float) -> float:
    """Mean opinion score (1..4.5) from RTT and jitter in seconds and loss as a ratio (0..1)."""
    r = r_factor(rtt * 1000.0, jitter_s * 1000.0, loss * 100.0)
    return 1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)
