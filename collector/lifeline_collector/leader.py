"""Which collector evaluates alerts and notifies, when several share one PostgreSQL.

Every collector serves (ingest, heartbeat keys and beats, the board, the API, ``/metrics``); only
the holder of the **lease** judges alerts and notifies. The lease is a PostgreSQL session-level
advisory lock held on a connection of its own: the server releases it the moment that connection
ends, which a ``kill -9`` of the leader (its socket closed by the kernel), a crash or a restart of
PostgreSQL causes at once. The others try the lock every ``poll`` seconds; the one that gets it
reads the alert state back from the database (active alerts with their notification status,
silences, acknowledgements) exactly as a restarted collector does, so a page sent by the last
leader is not sent again.

Each acquisition increments ``leader_epoch`` in ``meta``: a number that only grows and names the
term an action belongs to. The leader checks its lock every ``poll`` seconds; once the check
fails it steps down on the spot (``Fence.term`` becomes None before anything else happens) and
contends again; the process goes on serving.

Fencing. A notification leaves only through a ``FencedNotifier`` built for one term: it goes out
only while that term is current *and* a query on the lease connection, made just before the send,
confirms the lock is still held. So nothing is sent once the loss is known, and nothing is sent
while PostgreSQL is unreachable (the confirmation fails). What remains:

- the milliseconds between that confirmation and the receiver reading the request: if the lease
  is lost in between, the next leader may send the same alert. Alertmanager deduplicates it (the
  same labels, still firing, inside the group's ``repeat_interval``); a plain webhook receiver may
  see it twice, in that window only.
- an Alertmanager member that missed a post catches up from its own lane inside the notifier,
  after the confirmed send; a member is only ever told what the cluster was already told, and the
  cluster deduplicates it.
- the alert's notification status is written to the database when the engine decides to notify,
  before the send. A leader that loses PostgreSQL between that write and the send sends nothing
  (the confirmation fails), and the next leader reads "notified": that alert is not paged again
  by a webhook; Alertmanager still gets it with the next keep-alive resend (``resend_interval``).
  Ordinary failures fall on the safe side: when PostgreSQL is gone the status write fails too,
  and the next leader, finding the alert unnotified, pages it once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from lifeline_collector.alerting.alert import AlertGroup
from lifeline_collector.errors import NotifyError
from lifeline_collector.notify import Notifier
from lifeline_collector.store.backends import safe_dsn, side_connection

log = logging.getLogger("lifeline_collector.leader")

LEADER_LOCK = 0x4C49_4646  # pg_advisory_lock key of the alerting lease ("LIFF")
POLL = 0.5
CONNECT_TIMEOUT = 5


class Leadership:
    """The lease: ``acquire`` it, check it is ``held``, or let ``run`` contend and watch for good."""

    def __init__(self, dsn: str, *, poll: float = POLL) -> None:
        self.dsn = dsn
        self.poll = poll
        self.epoch = 0
        self._conn: Any = None
        self._lock = threading.Lock()  # the lease connection is shared by the watch and ``confirm``

    def _connect(self) -> Any:
        # A leader whose host vanished is noticed by the keepalives of this connection, not
        # only by a kill that closes its socket.
        return side_connection(self.dsn, "leader lease", connect_timeout=CONNECT_TIMEOUT)

    def try_acquire(self) -> bool:
        """One attempt at the lock; True (and a new epoch) if this process holds it now."""
        import psycopg

        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                held = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()[0]
                if not held:
                    return False
                row = self._conn.execute(
                    "UPDATE meta SET value = value + 1 WHERE key = 'leader_epoch' RETURNING value"
                ).fetchone()
            except psycopg.Error as exc:
                log.warning("leader lease: %s; trying again", str(exc).strip() or type(exc).__name__)
                self._drop()
                return False
            self.epoch = int(row[0])
        log.info("leading (epoch %d) over %s", self.epoch, safe_dsn(self.dsn))
        return True

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Block until this process holds the lease (True) or ``stop`` is set (False)."""
        announced = False
        while stop is None or not stop.is_set():
            if self.try_acquire():
                return True
            if not announced:
                log.info("standing by: another collector leads over %s", safe_dsn(self.dsn))
                announced = True
            time.sleep(self.poll)
        return False

    def held(self) -> bool:
        """Whether the lease is still ours: its connection answers and still holds the lock."""
        import psycopg

        with self._lock:
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

    def run(
        self, on_gained: Callable[[int], None], on_lost: Callable[[int], None], stop: threading.Event
    ) -> threading.Thread:
        """Contend for the lease in a thread, for as long as ``stop`` is not set: ``on_gained(epoch)``
        when this process starts to lead, ``on_lost(epoch)`` the moment a check finds the lease gone
        (then it contends again). Both are called from that thread."""

        def contend() -> None:
            announced = False
            while not stop.is_set():
                if not self.try_acquire():
                    if not announced:
                        log.info("standing by: another collector leads over %s", safe_dsn(self.dsn))
                        announced = True
                    stop.wait(self.poll)
                    continue
                announced = False
                epoch = self.epoch
                on_gained(epoch)
                while not stop.wait(self.poll):
                    if not self.held():
                        log.error("lost the leader lease (epoch %d): not notifying; contending again", epoch)
                        on_lost(epoch)
                        break
                with self._lock:
                    self._drop()  # a clean stop, or a lost lease: end the session with it

        thread = threading.Thread(target=contend, name="leader-lease", daemon=True)
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
        with self._lock:
            self._drop()


class Fence:
    """The term this process leads in (None: it does not lead), and the lease check a send needs.

    ``term`` is written by the lease thread and read by the event loop; it is replaced whole, so a
    reader sees the old or the new value."""

    def __init__(self, confirm: Callable[[], bool] = lambda: True) -> None:
        self.term: int | None = None
        self._confirm = confirm

    def confirm(self, term: int) -> bool:
        """Whether ``term`` is still current and the lease still held (a database round trip)."""
        return self.term == term and self._confirm() and self.term == term


class FencedNotifier:
    """A notifier that sends only for the term it was built in, while the lease is confirmed."""

    def __init__(self, inner: Notifier, fence: Fence, term: int) -> None:
        self.inner = inner
        self.fence = fence
        self.term = term
        self.name = inner.name
        self.kind = inner.kind
        self.wants_resend = inner.wants_resend
        self.secrets = inner.secrets
        self.max_attempts = inner.max_attempts

    async def send(self, group: AlertGroup) -> None:
        import asyncio

        if not await asyncio.to_thread(self.fence.confirm, self.term):
            raise NotifyError(
                self.name, f"not the leader in epoch {self.term} any more: not sent", retryable=False
            )
        await self.inner.send(group)

    async def aclose(self) -> None:
        await self.inner.aclose()
