"""What the health model remembers of each target, and the arithmetic over it.

Each probe round becomes a :class:`Round` stamped with the monotonic time it was observed. A
:class:`TargetSeries` keeps the rounds of the longest window any rule looks at and answers the
questions the layer rules and the risk model ask: loss over a window and how many separate loss
episodes made it, the current run of failed rounds, recent RTT and jitter, MOS. :func:`fit` is a
weighted least-squares line with the standard error of its slope, so a trend is only believed
when it stands out of the noise.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import median

from lifeline_agent.config import Target
from lifeline_agent.probes.stats import mos

# Reasons that mean "the host answered, but nobody listens on the port" (TCP RST).
REFUSED = frozenset({"refused"})


@dataclass(frozen=True, slots=True)
class Round:
    t: float  # monotonic time the result was observed
    success: bool
    reason: str
    sent: int
    lost: int
    rtt: float | None  # average RTT of the echoes that came back
    jitter: float | None
    started: float | None = None  # monotonic time the round began (None: same as ``t``)

    @property
    def began(self) -> float:
        return self.t if self.started is None else self.started


@dataclass(frozen=True, slots=True)
class LossView:
    sent: int
    lost: int
    lossy_rounds: int  # rounds that lost at least one echo
    partial_seconds: int  # one-second bins that lost some echoes but not all (loss, not an outage)
    episodes: int  # separate runs of lossy seconds (a 2 s burst or an outage is one episode)

    @property
    def ratio(self) -> float:
        return self.lost / self.sent if self.sent else 0.0

    def sustained(self, min_rounds: int, min_episodes: int, spike_max: float) -> bool:
        """Loss that is more than one burst: in several bursts, or steady partial loss.

        A single total outage is one episode and no partial second: it is reported as an outage
        (the layer fails), not as packet loss for the minute after it ends.
        """
        spread = self.episodes >= min_episodes or self.partial_seconds > spike_max
        return self.lossy_rounds >= min_rounds and spread


class TargetSeries:
    """The recent rounds of one target, oldest first."""

    def __init__(self, target: Target, keep: float) -> None:
        self.target = target
        self.keep = keep
        self.rounds: deque[Round] = deque()
        self.streak = 0  # failed rounds in a row
        self.streak_start: float | None = None  # when the first of them was observed
        # When the target first answered after an outage (two or more rounds lost in a row): the
        # outage is reported as such, so loss counted for a path that is back starts here.
        self.back_at: float | None = None

    def add(self, r: Round) -> None:
        self.rounds.append(r)
        if r.success:
            if self.streak >= 2:
                self.back_at = r.began
            self.streak, self.streak_start = 0, None
        else:
            if self.streak == 0:
                self.streak_start = r.t
            self.streak += 1
        while self.rounds and self.rounds[0].t < r.t - self.keep:
            self.rounds.popleft()

    @property
    def last(self) -> Round | None:
        return self.rounds[-1] if self.rounds else None

    def stale(self, now: float) -> bool:
        """True when the target has not reported for several intervals (its rounds stopped)."""
        last = self.last
        limit = 3 * self.target.interval + self.target.timeout + 2.0
        return last is None or now - last.t > limit

    def since(self, start: float) -> list[Round]:
        return [r for r in self.rounds if r.t >= start]

    def outage(self, now: float, margin: float, not_before: float | None = None) -> tuple[int, float]:
        """The current run of failures as evidence of an outage: (unanswered rounds, seconds).

        The seconds run from the start of the first failed round (at or after ``not_before``, when
        earlier failures are explained by another layer) to the start of the last round known
        unanswered. A round is known unanswered when it failed, or — without waiting for its
        timeout — when it was due ``margin`` seconds ago (one interval after the last round began)
        and no answer has come: a healthy path answers within a few RTTs, so a cut is seen a whole
        timeout sooner. An answer resets it all.
        """
        bounds = self.outage_bounds(now, margin, not_before)
        if bounds is None:
            return 0, 0.0
        n, first, last = bounds
        return n, last - first

    def outage_bounds(
        self, now: float, margin: float, not_before: float | None = None
    ) -> tuple[int, float, float] | None:
        """The rounds of :meth:`outage` as (how many, first start, last start); None without any."""
        last = self.last
        overdue_at = self.overdue_at(margin)
        if last is None or overdue_at is None:
            return None
        since = -math.inf if not_before is None else not_before
        starts = [r.began for r in itertools.islice(reversed(self.rounds), self.streak) if r.began >= since]
        due = last.began + self.target.interval
        if now >= overdue_at and due >= since:
            starts.append(due)
        if not starts:
            return None
        return len(starts), min(starts), max(starts)

    def overdue_at(self, margin: float) -> float | None:
        """While failing: when the round after the last one is ``margin`` past its due answer
        (one interval after the last round began, plus its burst); None when the last worked."""
        last = self.last
        if last is None or last.success or self.streak == 0:
            return None
        return last.began + self.target.interval + (self.target.count - 1) * self.target.spacing + margin

    def failed_since(self) -> float | None:
        """When the first round of the current run of failures began (None when the last worked)."""
        if self.streak == 0 or not self.rounds:
            return None
        return min(r.began for r in itertools.islice(reversed(self.rounds), self.streak))

    def last_answered(self) -> float | None:
        """When the last answered round began (None when no round in memory was answered)."""
        if self.streak >= len(self.rounds):
            return None
        return self.rounds[-1 - self.streak].began

    def answered_since(self, start: float) -> bool:
        """A round that began at or after ``start`` was answered."""
        return any(r.success and r.began >= start for r in reversed(self.rounds))

    def failing_for(self, now: float) -> float:
        """Seconds since the first round of the current run of failures (0 when the last round worked)."""
        return 0.0 if self.streak_start is None else now - self.streak_start

    def recent_rtt(self, now: float, span: float) -> float | None:
        """Median RTT of the rounds in the last ``span`` seconds (None without replies)."""
        values = [r.rtt for r in self.since(now - span) if r.rtt is not None]
        return median(values) if values else None

    def base_rtt(self) -> float | None:
        """The path's usual RTT: the lowest round RTT remembered (about the last minute)."""
        return min((r.rtt for r in self.rounds if r.rtt is not None), default=None)

    def recent_jitter(self, now: float, span: float) -> float | None:
        values = [r.jitter for r in self.since(now - span) if r.jitter is not None]
        return median(values) if values else None

    def mos(self, now: float, span: float, loss_window: float, outage_rounds: int = 3) -> float | None:
        """Voice quality of this path while it works: recent RTT and jitter, loss over the loss window.

        None while the path is out. Runs of ``outage_rounds`` or more failed rounds are an outage,
        reported as such, and left out of the loss (a call cannot be scored while nothing passes).
        """
        rtt = self.recent_rtt(now, span)
        if rtt is None or self.streak >= 2:
            return None
        sent = lost = 0
        run: list[Round] = []
        for r in [*self.since(now - loss_window), None]:
            if r is not None and not r.success:
                run.append(r)
                continue
            if len(run) < outage_rounds:
                sent += sum(x.sent for x in run)
                lost += sum(x.lost for x in run)
            run = []
            if r is not None:
                sent += r.sent
                lost += r.lost
        return mos(rtt, self.recent_jitter(now, span) or 0.0, lost / sent if sent else 0.0)


def loss_view(series: Iterable[TargetSeries], start: float) -> LossView:
    """Loss of several targets together since ``start``; episodes are counted on one-second bins."""
    sent = lost = lossy = 0
    bins: dict[int, list[int]] = {}
    for s in series:
        for r in s.since(start):
            sent += r.sent
            lost += r.lost
            cell = bins.setdefault(math.floor(r.t), [0, 0])
            cell[0] += r.lost
            cell[1] += r.sent
            if r.lost:
                lossy += 1
    ordered = sorted(b for b, (bin_lost, _) in bins.items() if bin_lost)
    partial = sum(1 for bin_lost, bin_sent in bins.values() if 0 < bin_lost < bin_sent)
    episodes = sum(1 for i, b in enumerate(ordered) if i == 0 or b - ordered[i - 1] > 1)
    return LossView(sent, lost, lossy, partial, episodes)


def back_at(series: Iterable[TargetSeries]) -> float:
    """When the last of these targets answered again after an outage (-inf: none did)."""
    return max((s.back_at for s in series if s.back_at is not None), default=-math.inf)


def loss_bins(series: Iterable[TargetSeries], start: float, now: float) -> list[tuple[float, float, float]]:
    """(age, loss ratio, echoes) per one-second bin since ``start``; age is negative seconds before now."""
    acc: dict[int, list[int]] = {}
    for s in series:
        for r in s.since(start):
            if r.sent:
                cell = acc.setdefault(math.floor(r.t - now), [0, 0])
                cell[0] += r.lost
                cell[1] += r.sent
    return [(b + 0.5, lost / sent, float(sent)) for b, (lost, sent) in sorted(acc.items())]


def rtt_bins(series: Iterable[TargetSeries], start: float, now: float) -> list[tuple[float, float, float]]:
    """(age, mean RTT, weight) per one-second bin since ``start``."""
    acc: dict[int, list[float]] = {}
    for s in series:
        for r in s.since(start):
            if r.rtt is not None:
                acc.setdefault(math.floor(r.t - now), []).append(r.rtt)
    return [(b + 0.5, sum(v) / len(v), float(len(v))) for b, v in sorted(acc.items())]


@dataclass(frozen=True, slots=True)
class Fit:
    slope: float  # units of y per second
    level: float  # the line's value now (x = 0)
    stderr: float  # standard error of the slope
    points: int

    def rising(self, min_points: int, sigmas: float = 2.0) -> bool:
        """True when the slope is positive and stands ``sigmas`` standard errors out of the noise."""
        return self.points >= min_points and self.slope > 0 and self.slope > sigmas * self.stderr

    def falling(self, min_points: int, sigmas: float = 2.0) -> bool:
        return self.points >= min_points and self.slope < 0 and -self.slope > sigmas * self.stderr


def fit(points: Sequence[tuple[float, float, float]]) -> Fit | None:
    """Weighted least squares of (x, y, weight) points; None with fewer than three points."""
    n = len(points)
    sw = sum(w for _, _, w in points)
    if n < 3 or sw <= 0:
        return None
    mx = sum(x * w for x, _, w in points) / sw
    my = sum(y * w for _, y, w in points) / sw
    sxx = sum(w * (x - mx) ** 2 for x, _, w in points)
    if sxx <= 0:
        return None
    slope = sum(w * (x - mx) * (y - my) for x, y, w in points) / sxx
    intercept = my - slope * mx
    residual = sum(w * (y - intercept - slope * x) ** 2 for x, y, w in points)
    stderr = math.sqrt(residual / (n - 2) / sxx)
    return Fit(slope, intercept, stderr, n)
