"""Target series built round by round for the health tests (one round a second)."""

from __future__ import annotations

from collections.abc import Sequence

from lifeline_agent.config import Target
from lifeline_agent.health.series import Round, TargetSeries


def series_of(losses: Sequence[int], sent: int = 1, *, start: float = 0.0) -> TargetSeries:
    """A CAD echo target sending ``sent`` echoes a round, one round a second from ``start``, the
    i-th round losing ``losses[i]`` of them (all of them: a failed round, "timeout")."""
    s = TargetSeries(Target("t", "cad", "icmp", "10.0.0.1", count=sent), keep=120.0)
    for i, lost in enumerate(losses):
        failed = lost >= sent
        s.add(Round(start + i, not failed, "timeout" if failed else "", sent, lost, None, None))
    return s
