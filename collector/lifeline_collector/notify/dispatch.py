"""Fan-out with retry: each notifier has its own queue and worker, off the request path.

A slow or dead receiver delays only its own queue. Failures that a retry can fix are retried with
exponential backoff and jitter (honouring Retry-After) up to the notifier's ``max_attempts``;
others are dropped with one log line. Nothing logged carries a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from lifeline_collector.alerting.alert import AlertGroup
from lifeline_collector.errors import NotifyError
from lifeline_collector.notify.base import Notifier, redact
from lifeline_collector.self_metrics import Stats
from lifeline_wire.retry import RetryPolicy

log = logging.getLogger("lifeline_collector.notify")

QUEUE_LIMIT = 10_000
BACKOFF_FIRST = 0.5
# The longest wait between two attempts, Retry-After included: an alert a minute late is already
# late, so a receiver asking for more is retried at this pace (or given up after max_attempts).
BACKOFF_MAX = 30.0


def notify_policy(first: float) -> RetryPolicy:
    """The retry policy of a notifier's queue (and of an Alertmanager member's lane)."""
    return RetryPolicy(initial=first, maximum=BACKOFF_MAX, retry_after_cap=BACKOFF_MAX)


class Dispatcher:
    def __init__(
        self, notifiers: Sequence[Notifier], stats: Stats, *, backoff_first: float = BACKOFF_FIRST
    ) -> None:
        self.notifiers = tuple(notifiers)
        self.stats = stats
        self.backoff_first = backoff_first
        self._queues: dict[str, asyncio.Queue[AlertGroup]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for notifier in self.notifiers:
            queue: asyncio.Queue[AlertGroup] = asyncio.Queue(QUEUE_LIMIT)
            self._queues[notifier.name] = queue
            task = asyncio.create_task(self._worker(notifier, queue), name=f"notifier-{notifier.name}")
            self._tasks.append(task)

    def submit(self, group: AlertGroup) -> None:
        """Queue a group for every notifier that wants it (its receivers, if routed); never blocks."""
        for notifier in self.notifiers:
            if group.resend and not notifier.wants_resend:
                continue
            if group.receivers is not None and notifier.name not in group.receivers:
                continue
            queue = self._queues.get(notifier.name)
            if queue is None:
                continue  # not started (e.g. check-config); nothing to deliver to
            try:
                queue.put_nowait(group)
            except asyncio.QueueFull:
                self.stats.notification(notifier.name, "failed")
                log.warning("notifier %s: queue full, dropped a notification", notifier.name)

    async def drain(self, timeout: float) -> bool:
        """Wait until every queue is empty and idle (tests, shutdown); False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                for queue in self._queues.values():
                    await queue.join()
        except TimeoutError:
            return False
        return True

    async def stop(self, flush_timeout: float = 5.0) -> None:
        await self.drain(flush_timeout)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for notifier in self.notifiers:
            await notifier.aclose()

    async def _worker(self, notifier: Notifier, queue: asyncio.Queue[AlertGroup]) -> None:
        while True:
            group = await queue.get()
            try:
                await self._deliver(notifier, group)
            finally:
                queue.task_done()

    async def _deliver(self, notifier: Notifier, group: AlertGroup) -> None:
        attempts = max(1, notifier.max_attempts)
        policy = notify_policy(self.backoff_first)
        for attempt in range(1, attempts + 1):
            try:
                await notifier.send(group)
            except NotifyError as exc:
                message = redact(str(exc), notifier.secrets)
                if not exc.retryable or attempt == attempts:
                    self.stats.notification(notifier.name, "failed")
                    log.error("%s; gave up after %d attempt(s)", message, attempt)
                    return
                wait = policy.delay(attempt - 1, exc.retry_after)
                self.stats.notification(notifier.name, "retry")
                log.warning("%s; attempt %d of %d, next in %.1fs", message, attempt, attempts, wait)
                await asyncio.sleep(wait)
            except Exception as exc:  # the notifier retry loop: a bug in one notifier must not stop others
                self.stats.notification(notifier.name, "failed")
                log.error(
                    "notifier %s: unexpected %s: %s",
                    notifier.name,
                    type(exc).__name__,
                    redact(str(exc), notifier.secrets),
                )
                return
            else:
                self.stats.notification(notifier.name, "ok")
                return
