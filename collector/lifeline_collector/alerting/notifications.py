"""Who is told what and when: inhibition → silences → routing → dedup → repeat and escalation.

State-based rather than edge-based: on every evaluation (for the alerts that changed) and every
tick (for all), a firing alert that is neither silenced nor inhibited and was not yet paged is
paged now. So an alert that fired behind a silence or a fleet incident is paged when the silence
expires or the incident ends, and nothing depends on having seen one particular transition.

- Inhibited: a firing ``FleetIncident`` holds the position as a member (see ``incidents``), or a
  firing critical alert of the same position inhibits its warnings (Alertmanager's usual
  ``severity`` rule).
- Silenced: an active silence matches the labels.
- Acknowledged: no repeats and no escalation for that alert; the keep-alive to Alertmanager goes on.
  The first acknowledgement of each alert instance is counted, with its delay since firing
  (``AckTimes``: time to acknowledge on the dashboards).
- Resolved is sent to whoever was paged (and only if someone was).
- Firing alerts are re-sent to notifiers that want it (Alertmanager) every ``resend_interval``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lifeline_collector.alerting import incidents
from lifeline_collector.alerting.alert import Alert, AlertGroup, AlertState, group_of
from lifeline_collector.alerting.routing import Router, union
from lifeline_collector.alerting.silences import Ack, Registry
from lifeline_collector.alerting.state import AlertStates, Change


@dataclass(frozen=True, slots=True)
class AlertStatus:
    silenced_by: tuple[str, ...] = ()
    inhibited_by: tuple[str, ...] = ()
    acknowledged: Ack | None = None
    notified: bool = False  # a firing notification went out

    @property
    def muted(self) -> bool:
        return bool(self.silenced_by or self.inhibited_by)

    def to_json(self) -> dict[str, object]:
        return {
            "state": "suppressed" if self.muted else "active",
            "silencedBy": list(self.silenced_by),
            "inhibitedBy": list(self.inhibited_by),
            "acknowledged": None if self.acknowledged is None else self.acknowledged.to_json(),
            "notified": self.notified,
        }


@dataclass(slots=True)
class AckTimes:
    """Time to acknowledge, per (alertname, site): instances acknowledged and their summed delay.

    The delay runs from when the alert fired to its first acknowledgement (0 for an alert acknowledged
    while still pending). Counters of this process only, like every Prometheus counter: an
    acknowledgement made before the process started (restored from the store) is not counted again.
    """

    count: Counter[tuple[str, str]] = field(default_factory=Counter)
    seconds: dict[tuple[str, str], float] = field(default_factory=dict)

    def observe(self, alert: Alert, ack: Ack) -> None:
        key = (alert.name, alert.labels.get("site", ""))
        fired = ack.at if alert.fired_at is None else alert.fired_at
        self.count[key] += 1
        self.seconds[key] = self.seconds.get(key, 0.0) + max(0.0, ack.at - fired)


@dataclass(slots=True)
class _RouteState:
    last_sent: float
    escalated: bool = False


@dataclass(slots=True)
class _Delivery:
    notified_at: float | None = None
    receivers: tuple[str, ...] | None = ()  # who was paged: they hear the resolution
    last_refresh: float = 0.0
    routes: dict[int, _RouteState] = field(default_factory=dict)
    reported: AlertStatus | None = None


class Notifications:
    def __init__(
        self,
        states: AlertStates,
        *,
        resend_interval: float,
        deliver: Callable[[AlertGroup], None],
        router: Router | None = None,
        registry: Registry | None = None,
        correlator: incidents.FleetCorrelator | None = None,
        on_status: Callable[[Alert, AlertStatus], None] = lambda alert, status: None,
        counted_after: float = float("-inf"),
    ) -> None:
        self.states = states
        self.resend_interval = resend_interval
        self.deliver = deliver
        self.router = router or Router()
        self.registry = registry or Registry()
        self.correlator = correlator
        self.on_status = on_status
        self.ack_times = AckTimes()
        # Acknowledgements from before this (the process start) were counted by an earlier process.
        self.counted_after = counted_after
        self._deliveries: dict[str, _Delivery] = {}

    # --- what an alert's status is -------------------------------------------------------------

    def status(self, alert: Alert, now: float) -> AlertStatus:
        delivery = self._deliveries.get(alert.fingerprint)
        return AlertStatus(
            silenced_by=self.registry.silenced_by(alert.labels, now),
            inhibited_by=self._inhibitors(alert),
            acknowledged=self.registry.ack_of(alert.fingerprint, alert.starts_at),
            notified=delivery is not None and delivery.notified_at is not None,
        )

    def _inhibitors(self, alert: Alert) -> tuple[str, ...]:
        agent = alert.labels.get("agent")
        if not agent:
            return ()
        out: list[str] = []
        power = alert.name == "PositionLayerFailed" and alert.labels.get("layer") == "power"
        if self.correlator is not None and alert.name in incidents.INHIBITABLE and not power:
            scope = incidents.scope_of(alert.labels.get("site", ""))
            firing = [a.fingerprint for a in self.states.of_scope(scope) if a.state is AlertState.FIRING]
            out.extend(self.correlator.inhibitors(agent, firing))
        if alert.severity == "warning":
            out.extend(
                other.fingerprint
                for other in self.states.of_scope(alert.scope)
                if other.severity == "critical" and other.state is AlertState.FIRING
            )
        return tuple(out)

    def restore(self, fingerprint: str, notified_at: float | None, receivers: tuple[str, ...] | None) -> None:
        """After a restart: what was paged before (so it is neither paged again nor left unresolved)."""
        if notified_at is not None:
            self._deliveries[fingerprint] = _Delivery(notified_at, receivers, notified_at)

    # --- the pipeline --------------------------------------------------------------------------

    def process(self, changes: Iterable[Change], now: float) -> None:
        """After one evaluation: resolved alerts first, then every alert whose muting may have moved.

        A change of a fleet incident can mute or release the alerts of its site; a change of a
        critical alert, the warnings of its position. Everything else only concerns itself.
        """
        consider: dict[str, Alert] = {}
        sites: set[str] = set()
        scopes: set[str] = set()
        for change in changes:
            alert = change.alert
            if alert.name == incidents.NAME:
                sites.add(alert.labels.get("site", ""))
            elif alert.severity == "critical":
                scopes.add(alert.scope)
            if alert.state is AlertState.RESOLVED:
                self._resolved(alert)
            else:
                consider[alert.fingerprint] = alert
        for scope in scopes:
            consider.update((a.fingerprint, a) for a in self.states.of_scope(scope))
        if sites:
            consider.update(
                (a.fingerprint, a) for a in self.states.active() if a.labels.get("site", "") in sites
            )
        for alert in consider.values():
            self._consider(alert, now, periodic=False)

    def tick(self, now: float) -> None:
        """Every evaluation interval: silences that started or ended, repeats, escalation, resends."""
        for alert in self.states.active():
            self._consider(alert, now, periodic=True)

    def _resolved(self, alert: Alert) -> None:
        delivery = self._deliveries.pop(alert.fingerprint, None)
        if self.correlator is not None and alert.name == incidents.NAME:
            self.correlator.drop(alert.fingerprint)
        if delivery is not None and delivery.notified_at is not None:
            self.deliver(group_of(alert, receivers=delivery.receivers))

    def _consider(self, alert: Alert, now: float, *, periodic: bool) -> None:
        status = self.status(alert, now)
        delivery = self._deliveries.setdefault(alert.fingerprint, _Delivery())
        if alert.state is not AlertState.FIRING or status.muted:
            self._report(alert, status, delivery)
            return
        routes = self.router.match(alert.labels)
        if delivery.notified_at is None:
            receivers = union(*(route.notifiers for _, route in routes))
            delivery.notified_at = delivery.last_refresh = now
            delivery.receivers = receivers
            delivery.routes = {index: _RouteState(now) for index, _ in routes}
            self.deliver(group_of(alert, receivers=receivers))
            self._report(alert, self.status(alert, now), delivery)
            return
        self._report(alert, status, delivery)
        if not periodic:
            return
        if status.acknowledged is None:
            for index, route in routes:
                state = delivery.routes.get(index)
                if state is None:  # a delivery restored after a restart: its route state was not kept
                    # An escalation that went out before the restart is not sent again: whoever it
                    # reached is among the receivers that were kept.
                    reached = set(delivery.receivers or ())
                    escalated = bool(route.escalate_to) and set(route.escalate_to) <= reached
                    state = delivery.routes[index] = _RouteState(now, escalated)
                if (
                    route.escalate_after
                    and route.escalate_to
                    and not state.escalated
                    and now - delivery.notified_at >= route.escalate_after
                ):
                    state.escalated = True
                    delivery.receivers = union(delivery.receivers, route.escalate_to)
                    self.deliver(group_of(alert, receivers=route.escalate_to, reason="escalation"))
                    self.on_status(alert, status)  # kept with who was reached: a restart escalates no more
                if route.repeat_interval and now - state.last_sent >= route.repeat_interval:
                    state.last_sent = delivery.last_refresh = now
                    targets = union(route.notifiers, route.escalate_to if state.escalated else ())
                    self.deliver(group_of(alert, receivers=targets, reason="repeat"))
        if now - delivery.last_refresh >= self.resend_interval:
            delivery.last_refresh = now
            self.deliver(group_of(alert, resend=True, receivers=delivery.receivers))

    def refresh(self, alert: Alert, now: float) -> None:
        """A paged alert's wording changed (an outage moved on): notifiers that keep alerts current
        (Alertmanager) get it now, as a resend of the same alert; nobody is paged again."""
        delivery = self._deliveries.get(alert.fingerprint)
        if delivery is None or delivery.notified_at is None or self.status(alert, now).muted:
            return
        delivery.last_refresh = now
        self.deliver(group_of(alert, resend=True, receivers=delivery.receivers, reason="update"))

    def _report(self, alert: Alert, status: AlertStatus, delivery: _Delivery) -> None:
        if status != delivery.reported:
            before, delivery.reported = delivery.reported, status
            ack = status.acknowledged
            if ack is not None and (
                before.acknowledged is None if before is not None else ack.at > self.counted_after
            ):
                self.ack_times.observe(alert, ack)
            self.on_status(alert, status)

    def receivers_of(self, fingerprint: str) -> tuple[str, ...] | None:
        delivery = self._deliveries.get(fingerprint)
        return None if delivery is None else delivery.receivers

    def notified_at(self, fingerprint: str) -> float | None:
        delivery = self._deliveries.get(fingerprint)
        return None if delivery is None else delivery.notified_at
