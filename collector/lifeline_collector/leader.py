"""Which collector serves, when several share one PostgreSQL: one leads, the others stand by.

The lease is a PostgreSQL session-level advisory lock held on a connection of its own: the server
releases it the moment that connection ends, which a ``kill -9`` of the leader (its socket closed by
the kernel) or a crash causes at once. A standby tries the lock every ``poll`` seconds and, once it
holds it, starts serving exactly as a restarted collector does (agents, active alerts with their
notification status, silences and acknowledgements read back from the database), so a page sent
by the old leader is not sent again.

Each acquisition increments ``leader_epoch`` in ``meta``: a number that only grows, logged by the
leader, that says which term an action belongs to. The leader checks its lock connection every
``poll`` seconds; when it is gone (the database restarted, the network cut) it can no longer
know that it alone leads, so the process ends at once, before it can notify again, and its
service manager starts it again as a standby.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from lifeline_collector.store.backends import safe_dsn

log = logging.getLogger("lifeline_collector.leader")

LEADER_LOCK = 0x4C49_4646  # pg_advisory_lock key of the alerting lease ("LIFF")
POLL = 0.5
CONNECT_TIMEOUT = 5


class Leadership:
    def __init__(self, dsn: str, *, poll: float = POLL) -> None:
        self.dsn = dsn
        self.poll = poll
        self.epoch = 0
        self._conn: Any = None

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(
            self.dsn,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            application_name="lifeline-collector leader lease",
            # A leader whose host vanished (no FIN) is noticed by keepalives, not only by kill.
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
        )

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Block until this process holds the lease (True) or ``stop`` is set (False)."""
        import psycopg

        announced = False
        while stop is None or not stop.is_set():
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                held = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()[0]
                if held:
                    row = self._conn.execute(
                        "UPDATE meta SET value = value + 1 WHERE key = 'leader_epoch' RETURNING value"
                    ).fetchone()
                    self.epoch = int(row[0])
                    log.info("leading (epoch %d) over %s", self.epoch, safe_dsn(self.dsn))
                    return True
                if not announced:
                    log.info("standing by: another collector leads over %s", safe_dsn(self.dsn))
                    announced = True
            except psycopg.Error as exc:
                log.warning("leader lease: %s; trying again", str(exc).strip() or type(exc).__name__)
                self._drop()
            time.sleep(self.poll)
        return False

    def held(self) -> bool:
        """Whether the lease is still ours: its connection answers and still holds the lock."""
        import psycopg

        if self._conn is None or self._conn.closed:
            return False
        try:
            row = self._conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                " AND objid = %s AND granted",
                (LEADER_LOCK & 0xFFFF_FFFF,),
            ).fetchone()
        except psycopg.Error:
            return False
        return bool(row and row[0])

    def watch(self, on_lost: Callable[[], None], stop: threading.Event) -> threading.Thread:
        """Check the lease every ``poll`` seconds in a thread; call ``on_lost`` once if it goes."""

        def run() -> None:
            while not stop.wait(self.poll):
                if not self.held():
                    log.error("lost the leader lease (epoch %d): stopping at once", self.epoch)
                    on_lost()
                    return

        thread = threading.Thread(target=run, name="leader-lease", daemon=True)
        thread.start()
        return thread

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a broken connection: nothing to report
                log.debug("closing the lease connection failed", exc_info=True)
        self._conn = None

    def release(self) -> None:
        """Give the lease up (a clean stop): closing the session releases the lock."""
        self._drop()
