"""Minimum durations and recovery holds, so a state changes only when the change is real.

:class:`Held` answers "for how long has this condition been true without a break", which the
layer rules use for their minimum durations (RTT ≥ 150 ms *for 60 s*). :class:`Hysteresis` turns
a raw judgement into a steady state: it follows a worse judgement at once (the rules have already
waited their minimum duration) and a better one only after it has held for the recovery hold, so
one good round in the middle of an outage does not announce a recovery.
"""

from __future__ import annotations

from dataclasses import dataclass

SEVERITY = {"unknown": -1, "ok": 0, "degraded": 1, "failed": 2}


class Held:
    """Tracks since when each named condition has been continuously true."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}

    def update(self, key: str, condition: bool, now: float) -> float:
        """Record the condition's value now; return how long it has held (0 when false)."""
        if not condition:
            self._since.pop(key, None)
            return 0.0
        start = self._since.setdefault(key, now)
        return now - start


@dataclass(slots=True)
class Hysteresis:
    """The steady state of one layer (or of the risk band)."""

    state: str = "unknown"
    reason: str = "no data yet"
    since: float = 0.0
    better_since: float | None = None  # when the raw judgement first became better than ``state``
    cause: str = "none"

    def update(
        self, raw_state: str, raw_reason: str, now: float, recover_hold: float, cause: str = "none"
    ) -> bool:
        """Feed this evaluation's raw judgement; return True when the steady state changed."""
        if raw_state == self.state:
            self.reason, self.cause = raw_reason, cause
            self.better_since = None
            return False
        worse = SEVERITY[raw_state] > SEVERITY[self.state] or self.state == "unknown"
        if not worse:
            if self.better_since is None:
                self.better_since = now
            if now - self.better_since < recover_hold:
                return False
        self.state, self.reason, self.since, self.better_since = raw_state, raw_reason, now, None
        self.cause = cause
        return True


@dataclass(slots=True)
class BandTracker:
    """The risk band with the same rule: up at once, down only after the recovery hold."""

    bands: tuple[tuple[str, float], ...]  # (name, lower bound), ascending
    band: str = ""
    lower_since: float | None = None

    def __post_init__(self) -> None:
        self.band = self.band or self.bands[0][0]

    def classify(self, risk: float) -> str:
        name = self.bands[0][0]
        for band, bound in self.bands:
            if risk >= bound:
                name = band
        return name

    def rank(self, band: str) -> int:
        return [b for b, _ in self.bands].index(band)

    def update(self, risk: float, now: float, recover_hold: float) -> bool:
        raw = self.classify(risk)
        if raw == self.band:
            self.lower_since = None
            return False
        if self.rank(raw) < self.rank(self.band):
            if self.lower_since is None:
                self.lower_since = now
            if now - self.lower_since < recover_hold:
                return False
        self.band, self.lower_since = raw, None
        return True
