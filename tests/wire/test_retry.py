"""The one retry policy: what a status means, how Retry-After reads, how long a sender waits."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifeline_wire.retry import (
    MAX_RETRY_AFTER,
    Backoff,
    RetryDecision,
    RetryPolicy,
    decide,
    parse_retry_after,
)


@pytest.mark.parametrize(
    ("status", "decision"),
    [
        (200, RetryDecision.DONE),
        (202, RetryDecision.DONE),
        (204, RetryDecision.DONE),
        (408, RetryDecision.RETRY),
        (429, RetryDecision.RETRY),
        (500, RetryDecision.RETRY),
        (503, RetryDecision.RETRY),
        (599, RetryDecision.RETRY),
        (400, RetryDecision.GIVE_UP),
        (401, RetryDecision.GIVE_UP),
        (404, RetryDecision.GIVE_UP),
        (413, RetryDecision.GIVE_UP),
        (302, RetryDecision.GIVE_UP),
        (101, RetryDecision.GIVE_UP),
    ],
)
def test_status_decides_done_retry_or_give_up(status: int, decision: RetryDecision) -> None:
    assert decide(status) is decision


def test_retry_after_reads_seconds_and_http_dates_and_is_capped() -> None:
    assert parse_retry_after("7", 0.0) == 7.0
    assert parse_retry_after(" 7 ", 0.0) == 7.0
    assert parse_retry_after("99999", 0.0) == MAX_RETRY_AFTER
    assert parse_retry_after("99999", 0.0, cap=30.0) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    # a zone-less date ("-0000") is UTC, whatever the machine's local zone
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000", 1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412490.0) == 0.0  # in the past
    for bad in ("soon", "-5", "1.5", "", None, "Wed, 99 Foo", "²", "1²", "٣"):
        assert parse_retry_after(bad, 0.0) is None


@given(st.text(max_size=40))
def test_retry_after_never_raises(value: str) -> None:
    seconds = parse_retry_after(value, 1_700_000_000.0)
    assert seconds is None or 0.0 <= seconds <= MAX_RETRY_AFTER


def test_waits_grow_double_are_capped_and_jitter_between_half_and_whole() -> None:
    policy = RetryPolicy(initial=1.0, maximum=8.0)
    assert [policy.schedule(n) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    rng = random.Random(7)
    for n in range(200):
        wait = policy.delay(n % 8, rng=rng)
        assert 0.5 * policy.schedule(n % 8) <= wait <= policy.schedule(n % 8)
    assert policy.schedule(10_000) == 8.0  # a long outage never overflows the power


def test_retry_after_is_a_floor_capped_by_the_policy() -> None:
    policy = RetryPolicy(initial=1.0, maximum=8.0, retry_after_cap=30.0)
    assert policy.delay(0, retry_after=20.0) == 20.0  # never shortened by jitter
    assert policy.delay(0, retry_after=1000.0) == 30.0
    assert 0.5 <= policy.delay(0, retry_after=0.0) <= 1.0  # "now" does not make a sender spin
    assert 4.0 <= policy.delay(3, retry_after=1.0) <= 8.0  # the schedule still holds


def test_backoff_counts_attempts_and_starts_again_after_a_reset() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0)
    delays = [backoff.next() for _ in range(6)]
    assert all(0.5 * min(8.0, 2.0**n) <= d <= min(8.0, 2.0**n) for n, d in enumerate(delays))
    assert backoff.next(retry_after=30.0) == 30.0
    backoff.reset()
    assert backoff.next() <= 1.0
    fresh = backoff.copy()
    assert (fresh.attempt, fresh.initial, fresh.maximum) == (0, 1.0, 8.0)
