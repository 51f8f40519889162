"""Routing: which notifiers hear about an alert, how often it repeats, whom it escalates to.

Routes are tried in order; the first whose matchers all match takes the alert, and with
``continue = true`` the search goes on to the next routes too (Alertmanager's semantics). An alert
no route takes goes to every notifier, so a config without routes behaves as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lifeline_collector.alerting.errors import MatcherError
from lifeline_collector.alerting.silences import Matcher, matches_all
from lifeline_wire.tomlcfg import Section


@dataclass(frozen=True, slots=True)
class Route:
    matchers: tuple[Matcher, ...] = ()
    notifiers: tuple[str, ...] | None = None  # None: every notifier
    continue_: bool = False
    repeat_interval: float = 0.0  # re-notify while firing and not acknowledged; 0: never
    escalate_after: float = 0.0  # still firing and unacknowledged this long after the page; 0: never
    escalate_to: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return matches_all(self.matchers, labels)


DEFAULT_ROUTE = Route()


class Router:
    def __init__(self, routes: Sequence[Route] = ()) -> None:
        self.routes = tuple(routes)

    def match(self, labels: Mapping[str, str]) -> list[tuple[int, Route]]:
        """The routes that take an alert with ``labels``, as (index, route); -1 is the default."""
        out: list[tuple[int, Route]] = []
        for index, route in enumerate(self.routes):
            if route.matches(labels):
                out.append((index, route))
                if not route.continue_:
                    break
        return out or [(-1, DEFAULT_ROUTE)]


def union(*receivers: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Notifier names together, in order without repeats; None (everyone) absorbs any list."""
    out: list[str] = []
    for names in receivers:
        if names is None:
            return None
        out.extend(name for name in names if name not in out)
    return tuple(out)


def read_routes(root: Section, notifier_names: Sequence[str]) -> tuple[Route, ...]:
    """``[[routes]]``: match / match_re tables, notifiers, continue, repeat_interval, escalation."""
    routes: list[Route] = []
    known = set(notifier_names)
    for section in root.tables("routes"):
        matchers: list[Matcher] = []
        for key, op in (("match", "="), ("match_re", "=~")):
            for name, value in section.str_map(key).items():
                try:
                    matchers.append(Matcher.make(name, op, value))
                except MatcherError as exc:
                    section.error(f"{key}.{name}", exc.reason)
        notifiers = section.str_list("notifiers")
        if not section.has("notifiers") or not notifiers:
            section.error("notifiers", "is required: the names of the notifiers this route pages")
        escalate_to = section.str_list("escalate_to")
        for key, names in (("notifiers", notifiers), ("escalate_to", escalate_to)):
            for name in names:
                if name not in known:
                    section.error(
                        key, f"no notifier named {name!r} (known: {', '.join(sorted(known)) or 'none'})"
                    )
        continue_ = section.flag("continue", False)
        repeat = section.duration("repeat_interval", 0.0, min=0.0, max=7 * 86400.0)
        if 0 < repeat < 10:
            section.error(
                "repeat_interval", f"must be 0 (never) or ≥ 10s (got {section.data['repeat_interval']!r})"
            )
        escalate_after = section.duration("escalate_after", 0.0, min=0.0, max=7 * 86400.0)
        if escalate_to and not escalate_after:
            section.error("escalate_after", "is required with escalate_to")
        if escalate_after and not escalate_to:
            section.error("escalate_to", "is required with escalate_after")
        section.finish()
        routes.append(
            Route(
                matchers=tuple(matchers),
                notifiers=notifiers,
                continue_=continue_,
                repeat_interval=repeat,
                escalate_after=escalate_after,
                escalate_to=escalate_to,
            )
        )
    return tuple(routes)
