"""The alerting pipeline: rules → state machine → fleet grouping → stages → notification policy.

Per-position rules run for the positions being evaluated (one on an ingest, all on a tick); the
fleet correlator turns what those positions lost into ``FleetIncident`` alerts for their sites;
stages may rewrite the changes; ``Notifications`` applies inhibition, silences, acknowledgements,
routing, repeats and escalation and calls ``deliver`` for each notification.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from lifeline_collector.alerting import health, incidents, outage
from lifeline_collector.alerting.alert import Alert, AlertGroup, AlertState, Finding
from lifeline_collector.alerting.notifications import AlertStatus, Notifications
from lifeline_collector.alerting.routing import Router
from lifeline_collector.alerting.rules.rule import Rule, Waiting
from lifeline_collector.alerting.silences import Registry
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
        correlator: incidents.FleetCorrelator | None = None,
        router: Router | None = None,
        registry: Registry | None = None,
        on_status: Callable[[Alert, AlertStatus], None] = lambda alert, status: None,
        resolve_hold: float = 0.0,
        quiet_for: float = 0.0,
    ) -> None:
        self.rules = tuple(rules)
        self._waiting = tuple(rule for rule in self.rules if isinstance(rule, Waiting))
        # A position whose evaluation found nothing, with no alert, nothing lost towards a fleet
        # incident and no rule counting down a grace for it (``Waiting``), finds nothing again
        # until it reports (an ingest evaluates it) or has not reported for ``quiet_for`` seconds
        # (silence: the one finding that time alone brings), so the tick skips it. 0: the tick
        # evaluates every position.
        self.quiet_for = quiet_for
        self._quiet: dict[str, float | None] = {}  # agent → its last_seen when found quiet
        self.clock = clock
        self.resend_interval = resend_interval
        self.stages = tuple(stages)
        self.deliver = deliver
        self.record = record
        self.correlator = correlator
        self.states = AlertStates(resolve_hold)
        # A rule that raises for a position is skipped for it (its alerts there stay as they were),
        # counted here (lifeline_collector_rule_errors_total) and logged once per rule and position.
        self.rule_errors: Counter[str] = Counter()
        self._failing: set[tuple[str, str]] = set()
        self.outages = outage.Outages(self.states)
        self.notifications = Notifications(
            self.states,
            resend_interval=resend_interval,
            deliver=lambda group: self.deliver(group),  # late-bound: tests wrap ``deliver``
            router=router,
            registry=registry,
            correlator=correlator,
            on_status=on_status,
            counted_after=clock.now(),
        )

    def evaluate(self, agents: Iterable[AgentView], *, gone: Iterable[str] = ()) -> list[Change]:
        """Evaluate every rule for ``agents``; scopes in ``gone`` (revoked agents) resolve."""
        now = self.clock.now()
        changes: list[Change] = []
        sites: set[str] = set()
        quiet = self._quiet
        for agent in agents:
            with health.remembered():  # the rules and the correlator read the position's health once
                findings = self._findings(agent, now)
                findings = self.outages.fold(agent, findings, now)
                changes.extend(
                    self._outage_changes(agent.id, self.states.update(agent.id, findings, now), now)
                )
                if self.correlator is not None:
                    try:
                        sites |= self.correlator.observe(agent, now)
                    except Exception:  # as for a rule: this position is left out of fleet grouping
                        self.rule_errors[self.correlator.name] += 1
                        log.exception("fleet grouping failed for %s: left out of it this time", agent.id)
            lost = self.correlator is not None and self.correlator.has_lost(agent.id)
            waiting = any(rule.waiting(agent.id) for rule in self._waiting)
            if findings or lost or waiting or self.states.holds(agent.id):
                quiet.pop(agent.id, None)
            else:
                quiet[agent.id] = agent.last_seen
        for scope in gone:
            changes.extend(self._outage_changes(scope, self.states.update(scope, (), now), now))
            self.outages.forget(scope)
            if self.correlator is not None:
                sites |= self.correlator.forget(scope)
        if self.correlator is not None:
            for site in sorted(sites):
                findings = self.correlator.findings(site, now)
                changes.extend(self.states.update(incidents.scope_of(site), findings, now))
        updates = self._outage_updates(changes)
        changes.extend(Change(alert, AlertState.FIRING) for alert in updates)
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
        self.notifications.process(changes, now)
        for alert in updates:
            self.notifications.refresh(alert, now)
        return changes

    def _outage_changes(self, scope: str, changes: list[Change], now: float) -> list[Change]:
        """A resolved outage lead carries the outage's story; a lead gone closes its outage."""
        out = [
            Change(self.outages.finish(c.alert, now), c.previous)
            if c.alert.state is AlertState.RESOLVED
            else c
            for c in changes
        ]
        self.outages.settle_scope(scope, now)
        return out

    def _outage_updates(self, changes: list[Change]) -> list[Alert]:
        """Firing outage leads whose sentence or story changed (not otherwise changed just now):
        recorded, and re-sent to notifiers that keep alerts current (Alertmanager), never paged."""
        changed = {change.alert.fingerprint for change in changes}
        out: list[Alert] = []
        for fp in sorted(self.outages.updated() - changed):
            alert = self.states.get(fp)
            if alert is not None and alert.state is AlertState.FIRING:
                out.append(alert)
        return out

    def _findings(self, agent: AgentView, now: float) -> list[Finding]:
        """Every rule's findings for one position; a rule that raises keeps what it had found there."""
        findings: list[Finding] = []
        for rule in self.rules:
            key = (rule.name, agent.id)
            try:
                found = list(rule.evaluate(agent, now))
            except Exception:  # one rule's bug on one position's data must not blind the others
                self.rule_errors[rule.name] += 1
                if key not in self._failing and len(self._failing) < 10_000:
                    self._failing.add(key)
                    log.exception("rule %s failed for %s: skipped there while it fails", *key)
                findings += self._kept(*key)
            else:
                findings += found
                self._failing.discard(key)
        return findings

    def _kept(self, rule: str, scope: str) -> list[Finding]:
        """The alerts ``rule`` holds for ``scope`` now, as findings: neither resolved nor changed."""
        return [
            Finding(scope, alert.labels, alert.annotations, alert.state is AlertState.FIRING)
            for alert in self.states.of_scope(scope)
            if alert.name == rule
        ]

    def evaluate_fleet(self, agents: dict[str, AgentView], *, full: bool = False) -> list[Change]:
        """Evaluate the positions whose findings may have changed since they were last evaluated
        (``full``: every position, e.g. after their names or sites changed); revoked ones resolve."""
        known = {s for s in self.states.scopes() if not s.startswith(incidents.SCOPE_PREFIX)}
        if self.correlator is not None:
            known |= self.correlator.agents()
        gone = sorted(known - set(agents))
        for scope in gone:
            self._quiet.pop(scope, None)
        if full or not self.quiet_for:
            return self.evaluate(agents.values(), gone=gone)
        quiet, missing = self._quiet, object()
        heard_after = self.clock.now() - self.quiet_for
        due = [
            agent
            for agent in agents.values()
            if quiet.get(agent.id, missing) != agent.last_seen
            or (agent.last_seen is not None and agent.last_seen <= heard_after)
        ]
        return self.evaluate(due, gone=gone)

    def tick(self) -> None:
        """Silences that began or ended, repeats, escalation and keep-alive resends."""
        self.notifications.tick(self.clock.now())

    def active(self) -> list[Alert]:
        return self.states.active()

    def status(self, alert: Alert) -> AlertStatus:
        return self.notifications.status(alert, self.clock.now())
