"""Alert, silence and acknowledgement records, kept in the collector's ``Store``.

``alert_history`` holds every change of every alert (and each acknowledgement), ``alerts_active``
the alerts active now with their last notification status (what a restarted collector resumes
from), ``silences`` and ``acks`` what operators said. The tables themselves are part of the
store's schema (``store.schema``), so both engines create and migrate them with the rest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from lifeline_collector.alerting.alert import Alert, AlertState
from lifeline_collector.alerting.errors import UnknownAlertError, UnknownSilenceError
from lifeline_collector.alerting.silences import Ack, Matcher, Silence
from lifeline_collector.store import Store
from lifeline_collector.store.codec import as_int


class AlertStore:
    """Alert history, active alerts, silences and acknowledgements on the collector's ``Store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # --- alerts ----------------------------------------------------------------------------------

    def record_alert(self, alert: Alert, at_ms: int) -> None:
        with self.store._tx() as db:
            db.execute(
                "INSERT INTO alert_history (at_ms, fingerprint, alertname, scope, state, starts_ms, ends_ms,"
                " labels, annotations) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    at_ms,
                    alert.fingerprint,
                    alert.name,
                    alert.scope,
                    alert.state.value,
                    int(alert.starts_at * 1000),
                    None if alert.ends_at is None else int(alert.ends_at * 1000),
                    json.dumps(dict(alert.labels), sort_keys=True),
                    json.dumps(dict(alert.annotations), sort_keys=True),
                ),
            )

    def save_active(self, alert: Alert) -> None:
        """Keep the table of active alerts in step with a change (resolved alerts leave it)."""
        with self.store._tx() as db:
            if alert.state is AlertState.RESOLVED:
                db.execute("DELETE FROM alerts_active WHERE fingerprint = ?", (alert.fingerprint,))
                return
            db.execute(
                "INSERT INTO alerts_active (fingerprint, scope, state, alertname, starts_ms, fired_ms,"
                " labels, annotations) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (fingerprint) DO UPDATE SET scope = excluded.scope, state = excluded.state,"
                " starts_ms = excluded.starts_ms,"
                " fired_ms = excluded.fired_ms, labels = excluded.labels, annotations = excluded.annotations",
                (
                    alert.fingerprint,
                    alert.scope,
                    alert.state.value,
                    alert.name,
                    round(alert.starts_at * 1000),
                    None if alert.fired_at is None else round(alert.fired_at * 1000),
                    json.dumps(dict(alert.labels), sort_keys=True),
                    json.dumps(dict(alert.annotations), sort_keys=True),
                ),
            )

    def save_status(self, fingerprint: str, status: Mapping[str, object]) -> None:
        with self.store._tx() as db:
            db.execute(
                "UPDATE alerts_active SET status = ? WHERE fingerprint = ?",
                (json.dumps(status, sort_keys=True), fingerprint),
            )

    def active_alerts(self) -> list[tuple[Alert, dict[str, object]]]:
        """The alerts active when last recorded, each with its last notification status."""
        rows = self.store._query(
            "SELECT fingerprint, scope, state, starts_ms, fired_ms, labels, annotations, status"
            " FROM alerts_active ORDER BY starts_ms, fingerprint"
        )
        out: list[tuple[Alert, dict[str, object]]] = []
        for fp, scope, state, starts, fired, labels, notes, status in rows:
            alert = Alert(
                labels=json.loads(str(labels)),
                annotations=json.loads(str(notes)),
                state=AlertState(str(state)),
                starts_at=as_int(starts) / 1000,
                fingerprint=str(fp),
                scope=str(scope),
                fired_at=None if fired is None else as_int(fired) / 1000,
            )
            out.append((alert, json.loads(str(status))))
        return out

    def active_alert(self, fingerprint: str) -> Alert:
        for alert, _status in self.active_alerts():
            if alert.fingerprint == fingerprint:
                return alert
        raise UnknownAlertError(fingerprint)

    # --- silences and acknowledgements ----------------------------------------------------------

    def add_silence(self, silence: Silence) -> None:
        with self.store._tx() as db:
            db.execute(
                "INSERT INTO silences (id, matchers, starts_ms, ends_ms, created_by, comment, created_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    silence.id,
                    json.dumps([[m.name, m.op, m.value] for m in silence.matchers]),
                    round(silence.starts_at * 1000),
                    round(silence.ends_at * 1000),
                    silence.created_by,
                    silence.comment,
                    round(silence.created_at * 1000),
                ),
            )

    def expire_silence(self, silence_id: str, now_ms: int) -> None:
        """End a silence now (it stays listed as expired); unknown or already expired: an error."""
        with self.store._tx() as db:
            cursor = db.execute(
                "UPDATE silences SET ends_ms = ?,"
                " starts_ms = CASE WHEN starts_ms < ? THEN starts_ms ELSE ? END WHERE id = ? AND ends_ms > ?",
                (now_ms, now_ms, now_ms, silence_id, now_ms),
            )
            if cursor.rowcount == 0:
                raise UnknownSilenceError(silence_id)

    def silences(self, *, since_ms: int | None = None) -> list[Silence]:
        """Every silence, or those not expired before ``since_ms``."""
        sql = "SELECT id, matchers, starts_ms, ends_ms, created_by, comment, created_ms FROM silences"
        params: tuple[object, ...] = ()
        if since_ms is not None:
            sql += " WHERE ends_ms > ?"
            params = (since_ms,)
        rows = self.store._query(sql + " ORDER BY created_ms, id", params)
        return [
            Silence(
                id=str(sid),
                matchers=tuple(Matcher.make(*m) for m in json.loads(str(matchers))),
                starts_at=as_int(starts) / 1000,
                ends_at=as_int(ends) / 1000,
                created_by=str(by),
                comment=str(comment),
                created_at=as_int(created) / 1000,
            )
            for sid, matchers, starts, ends, by, comment, created in rows
        ]

    def add_ack(self, ack: Ack, alert: Alert) -> None:
        """Record an acknowledgement, and the fact in the alert's history."""
        at_ms = round(ack.at * 1000)
        with self.store._tx() as db:
            db.execute(
                "INSERT INTO acks (fingerprint, starts_ms, acked_by, at_ms, comment) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (fingerprint, starts_ms) DO UPDATE SET acked_by = excluded.acked_by,"
                " at_ms = excluded.at_ms, comment = excluded.comment",
                (ack.fingerprint, round(ack.starts_at * 1000), ack.by, at_ms, ack.comment),
            )
            annotations = {**alert.annotations, "acknowledged_by": ack.by, "ack_comment": ack.comment}
            db.execute(
                "INSERT INTO alert_history (at_ms, fingerprint, alertname, scope, state, starts_ms, ends_ms,"
                " labels, annotations) VALUES (?, ?, ?, ?, 'acknowledged', ?, NULL, ?, ?)",
                (
                    at_ms,
                    alert.fingerprint,
                    alert.name,
                    alert.scope,
                    round(alert.starts_at * 1000),
                    json.dumps(dict(alert.labels), sort_keys=True),
                    json.dumps(annotations, sort_keys=True),
                ),
            )

    def acks(self) -> list[Ack]:
        """Acknowledgements of the alerts active now (older ones stay for the record, unread)."""
        rows = self.store._query(
            "SELECT k.fingerprint, k.starts_ms, k.acked_by, k.at_ms, k.comment FROM acks k"
            " JOIN alerts_active a ON a.fingerprint = k.fingerprint AND a.starts_ms = k.starts_ms"
        )
        return [
            Ack(str(fp), as_int(starts) / 1000, str(by), as_int(at) / 1000, str(comment))
            for fp, starts, by, at, comment in rows
        ]

    def alert_history(self, scope: str, limit: int = 50) -> list[dict[str, object]]:
        rows = self.store._query(
            "SELECT at_ms, fingerprint, alertname, state, labels, annotations FROM alert_history"
            " WHERE scope = ? ORDER BY id DESC LIMIT ?",
            (scope, limit),
        )
        return [
            {
                "at_ms": r[0],
                "fingerprint": r[1],
                "alertname": r[2],
                "state": r[3],
                "labels": json.loads(str(r[4])),
                "annotations": json.loads(str(r[5])),
            }
            for r in rows
        ]
