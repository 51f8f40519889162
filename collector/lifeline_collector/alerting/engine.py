"""The alerting pipeline: rules → state machine → stages → fan-out.

Stages take and return the list of changes of one evaluation; issue 6's grouping, inhibition,
silences and acknowledgements slot in there without touching rules or notifiers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from lifeline_collector.alerting.model import Alert, AlertGroup, group_of
from lifeline_collector.alerting.rules import Rule
from lifeline_collector.alerting.state import AlertStates, Change
from lifeline_collector.clock import Clock
from lifeline_collector.fleet import AgentView

log = logging.getLogger("lifeline_collector.alerting")


class Stage(Protocol):
    def __call__(self, changes: list[Change], now: float) -> list[Change]: ...


class AlertEngine:
    def __init__(
        self,
        rules: Sequence[Rule],
        clock: Clock,
        *,
        resend_interval: float,
        stages: Sequence[Stage] = (),
        deliver: Callable[[AlertGroup], None] = lambda group: None,
        record: Callable[[Change], None] = lambda change: None,
    ) -> None:
        self.rules = tuple(rules)
        self.clock = clock
        self.resend_interval = resend_interval
        self.stages = tuple(stages)
        self.deliver = deliver
        self.record = record
        self.states = AlertStates()

    def evaluate(self, agents: Iterable[AgentView], *, gone: Iterable[str] = ()) -> list[Change]:
        """Evaluate every rule for ``agents``; scopes in ``gone`` (revoked agents) resolve."""
        now = self.clock.now()
        changes: list[Change] = []
        for agent in agents:
            findings = [finding for rule in self.rules for finding in rule.evaluate(agent, now)]
            changes.extend(self.states.update(agent.id, findings, now))
        for scope in gone:
            changes.extend(self.states.update(scope, (), now))
        for stage in self.stages:
            changes = stage(changes, now)
        for change in changes:
            log.info(
                "alert %s %s → %s: %s",
                change.alert.name,
                change.previous.value if change.previous else "new",
                change.alert.state.value,
                change.alert.annotations.get("summary", ""),
            )
            self.record(change)
            if change.notifiable:
                self.deliver(group_of(change.alert))
        return changes

    def evaluate_fleet(self, agents: dict[str, AgentView]) -> list[Change]:
        gone = self.states.scopes() - set(agents)
        return self.evaluate(agents.values(), gone=gone)

    def resend_due(self) -> list[Alert]:
        due = self.states.due_for_resend(self.clock.now(), self.resend_interval)
        for alert in due:
            self.deliver(group_of(alert, resend=True))
        return due

    def active(self) -> list[Alert]:
        return self.states.active()
