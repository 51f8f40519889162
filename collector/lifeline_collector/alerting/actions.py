"""What an operator does about alerts — silence, expire, acknowledge, list — kept by ``AlertStore``.

Used both by the running collector (API, which also updates its in-memory registry) and by the
``lifeline-collector silences`` / ``alerts`` commands, which work on the store directly; the
running collector picks their writes up within one evaluation tick.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lifeline_collector.alerting.alert import Alert
from lifeline_collector.alerting.errors import SilenceError
from lifeline_collector.alerting.silences import Ack, Matcher, Silence, new_silence, parse_matcher
from lifeline_collector.alerting.store import AlertStore

LATEST = 253_402_300_799.0  # 9999-12-31T23:59:59Z: the last time RFC 3339 (and the store) can hold


def create_silence(
    store: AlertStore,
    matchers: Iterable[Matcher | str],
    *,
    now: float,
    duration: float | None = None,
    starts_at: float | None = None,
    ends_at: float | None = None,
    created_by: str,
    comment: str = "",
) -> Silence:
    """Validate and store a silence; ``duration`` counts from ``starts_at`` (default now)."""
    parsed = [m if isinstance(m, Matcher) else parse_matcher(m) for m in matchers]
    start = now if starts_at is None else starts_at
    given_end = ends_at is not None
    if ends_at is None:
        if duration is None:
            raise SilenceError("endsAt", "give an end time or a duration")
        if duration <= 0:
            raise SilenceError("duration", "must be positive")
        ends_at = start + duration
    if ends_at > LATEST:
        raise SilenceError("endsAt" if given_end else "duration", "must end before the year 10000")
    silence = new_silence(
        parsed, starts_at=start, ends_at=ends_at, created_by=created_by, comment=comment, now=now
    )
    store.add_silence(silence)
    return silence


def expire_silence(store: AlertStore, silence_id: str, *, now: float) -> None:
    store.expire_silence(silence_id, round(now * 1000))


def acknowledge(
    store: AlertStore, fingerprint: str, *, by: str, comment: str = "", now: float, alert: Alert | None = None
) -> Ack:
    """Acknowledge the active alert ``fingerprint`` (looked up in the store unless given)."""
    if not by.strip():
        raise SilenceError("by", "who acknowledges is required")
    target = alert if alert is not None else store.active_alert(fingerprint)
    ack = Ack(fingerprint=fingerprint, starts_at=target.starts_at, by=by.strip(), at=now, comment=comment)
    store.add_ack(ack, target)
    return ack


@dataclass(frozen=True, slots=True)
class AlertRow:
    alert: Alert
    status: dict[str, object]
    silenced_by: tuple[str, ...]
    ack: Ack | None


def list_alerts(store: AlertStore, *, now: float) -> list[AlertRow]:
    """The active alerts as the collector last recorded them, with silences and acks as of now."""
    silences = store.silences(since_ms=round(now * 1000))
    acks = {a.fingerprint: a for a in store.acks()}
    rows: list[AlertRow] = []
    for alert, status in store.active_alerts():
        muted = tuple(s.id for s in silences if s.mutes(alert.labels, now))
        rows.append(AlertRow(alert, status, muted, acks.get(alert.fingerprint)))
    return rows
