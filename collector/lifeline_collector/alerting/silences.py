"""Silences and acknowledgements: what an operator said about alerts, with who and when.

Matchers work like Alertmanager's: ``name=value``, ``name!=value``, ``name=~regex``,
``name!~regex``; a regex must match the whole value; a label the alert lacks is the empty string.
A silence mutes every alert all of its matchers match between ``starts_at`` and ``ends_at``;
expiring it sets ``ends_at`` to now (it stays listed as expired, for the record).

An acknowledgement belongs to one alert *instance* (fingerprint and start): it stops repeats and
escalation of that alert, and does not carry over to the next time the same condition fires.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lifeline_collector.alerting.alert import rfc3339
from lifeline_collector.alerting.errors import MatcherError, SilenceError

OPS = ("=", "!=", "=~", "!~")
_MATCHER_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)(.*)$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_TEXT = 1000


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: str
    value: str
    _regex: re.Pattern[str] | None = None

    @classmethod
    def make(cls, name: str, op: str, value: str) -> Matcher:
        text = f"{name}{op}{value}"
        if not _NAME_RE.match(name):
            raise MatcherError(text, "the label name must match [A-Za-z_][A-Za-z0-9_]*")
        if op not in OPS:
            raise MatcherError(text, f"the operator must be one of {', '.join(OPS)}")
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(value)
            except re.error as exc:
                raise MatcherError(text, f"bad regex: {exc}") from None
        return cls(name, op, value, regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.name, "")
        if self._regex is not None:
            return (self._regex.fullmatch(value) is not None) == (self.op == "=~")
        return (value == self.value) == (self.op == "=")

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"

    def to_json(self) -> dict[str, object]:
        """Alertmanager's v2 shape."""
        return {
            "name": self.name,
            "value": self.value,
            "isRegex": self.op in ("=~", "!~"),
            "isEqual": self.op in ("=", "=~"),
        }


def parse_matcher(text: str) -> Matcher:
    """``site=north``, ``alertname=~Cad.*``, ``severity!=warning``; the value may be quoted."""
    match = _MATCHER_RE.match(text)
    if match is None:
        raise MatcherError(text, "must look like name=value, name!=value, name=~regex or name!~regex")
    name, op, value = match.group(1), match.group(2), match.group(3).strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return Matcher.make(name, op, value)


def matcher_from_json(data: object, where: str) -> Matcher:
    """Alertmanager's v2 matcher object: ``{"name", "value", "isRegex", "isEqual"}``."""
    if not isinstance(data, dict):
        raise SilenceError(where, "must be an object with name and value")
    name, value = data.get("name"), data.get("value")
    is_regex, is_equal = data.get("isRegex", False), data.get("isEqual", True)
    if not isinstance(name, str) or not isinstance(value, str):
        raise SilenceError(where, "name and value must be strings")
    if not isinstance(is_regex, bool) or not isinstance(is_equal, bool):
        raise SilenceError(where, "isRegex and isEqual must be true or false")
    op = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}[
        (is_regex, is_equal)
    ]
    try:
        return Matcher.make(name, op, value)
    except MatcherError as exc:
        raise SilenceError(where, exc.reason) from None


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    created_at: float

    def state(self, now: float) -> str:
        if now >= self.ends_at:
            return "expired"
        return "active" if now >= self.starts_at else "pending"

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        return self.state(now) == "active" and matches_all(self.matchers, labels)

    def to_json(self, now: float) -> dict[str, object]:
        return {
            "id": self.id,
            "matchers": [m.to_json() for m in self.matchers],
            "matcherText": ",".join(str(m) for m in self.matchers),
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at),
            "createdBy": self.created_by,
            "comment": self.comment,
            "createdAt": rfc3339(self.created_at),
            "status": {"state": self.state(now)},
        }


def new_silence(
    matchers: Iterable[Matcher],
    *,
    starts_at: float,
    ends_at: float,
    created_by: str,
    comment: str,
    now: float,
) -> Silence:
    """A validated silence with a fresh id; raises SilenceError naming the bad field."""
    chosen = tuple(matchers)
    if not chosen:
        raise SilenceError("matchers", "at least one matcher is required")
    if all(m.matches({}) for m in chosen):
        raise SilenceError("matchers", "would silence every alert (each matcher matches an empty label set)")
    if not created_by.strip():
        raise SilenceError("createdBy", "who creates the silence is required")
    if len(created_by) > MAX_TEXT or len(comment) > MAX_TEXT:
        raise SilenceError("comment", f"createdBy and comment are limited to {MAX_TEXT} characters")
    if ends_at <= starts_at:
        raise SilenceError("endsAt", "must be after startsAt")
    if ends_at <= now:
        raise SilenceError("endsAt", "is in the past")
    return Silence(
        id=str(uuid.uuid4()),
        matchers=chosen,
        starts_at=starts_at,
        ends_at=ends_at,
        created_by=created_by.strip(),
        comment=comment,
        created_at=now,
    )


@dataclass(frozen=True, slots=True)
class Ack:
    fingerprint: str
    starts_at: float  # the start of the alert instance acknowledged
    by: str
    at: float
    comment: str = ""

    def to_json(self) -> dict[str, object]:
        return {"by": self.by, "at": rfc3339(self.at), "comment": self.comment}


class Registry:
    """The silences and acknowledgements in force, cached from the store (reloaded when another
    process — the CLI — commits)."""

    def __init__(self, silences: Iterable[Silence] = (), acks: Iterable[Ack] = ()) -> None:
        self.silences: dict[str, Silence] = {}
        self.acks: dict[str, Ack] = {}
        self.load(silences, acks)

    def load(self, silences: Iterable[Silence], acks: Iterable[Ack]) -> None:
        self.silences = {s.id: s for s in silences}
        self.acks = {a.fingerprint: a for a in sorted(acks, key=lambda a: a.at)}

    def silenced_by(self, labels: Mapping[str, str], now: float) -> tuple[str, ...]:
        return tuple(s.id for s in self.silences.values() if s.mutes(labels, now))

    def ack_of(self, fingerprint: str, starts_at: float) -> Ack | None:
        ack = self.acks.get(fingerprint)
        if ack is None or round(ack.starts_at * 1000) != round(starts_at * 1000):
            return None
        return ack
