"""Telling the people who were paged that someone acknowledged the alert.

An acknowledgement from the board or the API goes to the receivers the alert was paged to, as the
same alert with ``acknowledged_by`` and ``ack_comment`` among its annotations (group reason
``acknowledged``): the other supervisors' pagers learn that someone is on it. An alert that was
never paged (still pending, muted, inhibited) announces nothing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from lifeline_collector.alerting.alert import Alert, AlertState, group_of
from lifeline_collector.alerting.silences import Ack

if TYPE_CHECKING:
    from lifeline_collector.service import Collector

REASON = "acknowledged"


def announce_ack(service: Collector, alert: Alert, ack: Ack) -> bool:
    """Queue the acknowledgement for the alert's receivers; False when nobody was paged."""
    notifications = service.engine.notifications
    if alert.state is not AlertState.FIRING or notifications.notified_at(alert.fingerprint) is None:
        return False
    notes = {**alert.annotations, "acknowledged_by": ack.by, "ack_comment": ack.comment}
    receivers = notifications.receivers_of(alert.fingerprint)
    service.dispatcher.submit(group_of(replace(alert, annotations=notes), receivers=receivers, reason=REASON))
    return True
