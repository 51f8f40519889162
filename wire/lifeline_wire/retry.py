"""One retry policy for every sender: the agent's shipper, remote-write and the notifiers.

An HTTP answer decides what happens next (:func:`decide`), as in Alertmanager's
``notify/util.go``: 2xx is done; 408, 429 and 5xx may get better by retrying; any other answer
will not. A sender may know more about its peer (remote-write reads Prometheus' "out of order"
500s as permanent) and overrides that one case itself.

The wait before the next attempt (:class:`RetryPolicy`) grows ``initial·2ⁿ`` up to ``maximum``
and is scaled by a random factor in [0.5, 1.0] ("equal jitter"). Of the rules the senders had,
this one was chosen because it keeps both promises a policy makes: a wait never exceeds the cap
(a factor above 1 would break it) and never falls below half the schedule (a factor near 0 would
let thousands of agents that failed together hammer a collector that just came back). A
``Retry-After`` the peer sent is a floor, never shortened by jitter — the peer said when it can
take more — and is itself capped, so a confused peer cannot park a sender for hours.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = [
    "MAX_RETRY_AFTER",
    "Backoff",
    "RetryDecision",
    "RetryPolicy",
    "decide",
    "parse_retry_after",
]

# Never wait longer than this for one Retry-After, whatever the peer says.
MAX_RETRY_AFTER = 600.0
# Attempts past this no longer grow the wait (2⁶⁰ · any sane initial is past every cap), so the
# power stays a finite float however long an outage lasts.
_MAX_DOUBLINGS = 60


class RetryDecision(enum.Enum):
    DONE = "done"
    RETRY = "retry"
    GIVE_UP = "give_up"


def decide(status: int) -> RetryDecision:
    """What an HTTP status means for the request that got it."""
    if 200 <= status < 300:
        return RetryDecision.DONE
    if status in (408, 429) or 500 <= status < 600:
        return RetryDecision.RETRY
    return RetryDecision.GIVE_UP


def parse_retry_after(value: str | None, now: float, cap: float = MAX_RETRY_AFTER) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110
    §10.2.3), at most ``cap``; None when absent or unreadable. ``now`` is Unix seconds."""
    if not value:
        return None
    value = value.strip()
    # delta-seconds are ASCII digits: str.isdigit alone also takes "²" and other Unicode digits
    if value.isascii() and value.isdigit():
        return min(float(value), cap)
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # "-0000": a date in UTC with no zone of its own
        return min(max(0.0, when.timestamp() - now), cap)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait before attempt ``n + 1`` after ``n`` failed in a row (see the module)."""

    initial: float = 0.5
    maximum: float = 30.0
    retry_after_cap: float = MAX_RETRY_AFTER

    def schedule(self, attempt: int) -> float:
        """The un-jittered wait after ``attempt`` failures before it (0: the first retry)."""
        return min(self.maximum, self.initial * 2.0 ** min(max(attempt, 0), _MAX_DOUBLINGS))

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        draw = (rng or _RNG).uniform(0.5, 1.0)
        wait = self.schedule(attempt) * draw
        if retry_after is None or not math.isfinite(retry_after):
            return wait
        return max(wait, min(max(retry_after, 0.0), self.retry_after_cap))


# Jitter spreads senders that failed together apart; it guards nothing, so any generator serves.
_RNG = random.Random()  # noqa: S311


class Backoff:
    """A sender's run of failed attempts over a :class:`RetryPolicy`: :meth:`next` gives the wait
    and counts the attempt, :meth:`reset` starts again after a success."""

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        rng: random.Random | None = None,
        retry_after_cap: float = MAX_RETRY_AFTER,
    ) -> None:
        self.policy = RetryPolicy(initial, maximum, retry_after_cap)
        self.attempt = 0
        self._rng = rng or _RNG

    @property
    def initial(self) -> float:
        return self.policy.initial

    @property
    def maximum(self) -> float:
        return self.policy.maximum

    def next(self, retry_after: float | None = None) -> float:
        delay = self.policy.delay(self.attempt, retry_after, self._rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0

    def copy(self) -> Backoff:
        """The same policy with a fresh count (one per delivery path)."""
        return Backoff(self.policy.initial, self.policy.maximum, self._rng, self.policy.retry_after_cap)
