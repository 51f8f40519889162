"""The running collector: store, fleet view, ingest, alert engine and notifiers wired together."""

from __future__ import annotations

import asyncio
import logging

from lifeline_collector.alerting.engine import AlertEngine
from lifeline_collector.alerting.rules import CadTargetUnreachable, PositionSilent
from lifeline_collector.alerting.state import Change
from lifeline_collector.clock import Clock, SystemClock
from lifeline_collector.config import CollectorConfig
from lifeline_collector.errors import StoreError
from lifeline_collector.fleet import Fleet
from lifeline_collector.ingest import Ingestor
from lifeline_collector.notify import REGISTRY, Notifier, NotifyContext
from lifeline_collector.notify.dispatch import Dispatcher
from lifeline_collector.remote_write import DurableRemoteWriter
from lifeline_collector.stats import Stats
from lifeline_collector.store import AgentRow, Store
from lifeline_wire import Envelope, IngestResponse

log = logging.getLogger("lifeline_collector")

PRUNE_EVERY = 3600.0


class Collector:
    def __init__(self, config: CollectorConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.store = Store(config.store.path)
        self.fleet = Fleet.load(self.store)
        self.stats = Stats()
        context = NotifyContext(
            external_url=config.server.public_url,
            clock=self.clock,
            resend_interval=config.alerting.resend_interval,
        )
        notifiers: list[Notifier] = [REGISTRY[n.kind].build(n, context) for n in config.notifiers]
        self.dispatcher = Dispatcher(notifiers, self.stats)
        public_url = config.server.public_url
        self.engine = AlertEngine(
            [
                CadTargetUnreachable(config.alerting.cad_failures, public_url),
                PositionSilent(config.alerting.silent_after, public_url),
            ],
            self.clock,
            resend_interval=config.alerting.resend_interval,
            deliver=self.dispatcher.submit,
            record=self._record,
        )
        self.ingestor = Ingestor(self.store, self.fleet, self.stats, self.clock)
        self.remote_writer: DurableRemoteWriter | None = None
        if config.remote_write.enabled:
            # Reads the store after a cursor, so samples keep their original timestamps and a
            # restart or a long receiver outage resends from where it stopped.
            self.remote_writer = DurableRemoteWriter(config.remote_write, self.store)
            writer = self.remote_writer
            self.ingestor.on_stored.append(lambda _stored: writer.wake())
        self._data_version = self.store.data_version()
        self._last_prune = self.clock.now()
        self._ticker: asyncio.Task[None] | None = None

    async def start(self, *, ticker: bool = True) -> None:
        """Start notifier workers and (unless a test drives ``tick``) the evaluation tick."""
        self.dispatcher.start()
        if self.remote_writer is not None:
            self.remote_writer.start()
        if ticker:
            self._ticker = asyncio.create_task(self._tick_loop(), name="alert-tick")
            self._ticker.add_done_callback(_report_crash)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        await self.dispatcher.stop()
        if self.remote_writer is not None:
            await self.remote_writer.drain()
        self.store.close()

    def ingest(self, agent: AgentRow, envelope: Envelope) -> IngestResponse:
        """Store a request and evaluate that agent's alerts at once (no waiting for the tick)."""
        response, stored = self.ingestor.ingest(agent, envelope)
        self.engine.evaluate([stored.agent])
        return response

    def tick(self) -> None:
        """Once per evaluate_interval: follow the agent registry, find silence, resend, prune."""
        version = self.store.data_version()
        if version != self._data_version:  # another process (agents add/revoke) committed
            self._data_version = version
            self.fleet.sync_agents(self.store.agents())
        self.engine.evaluate_fleet(self.fleet.agents)
        self.engine.resend_due()
        now = self.clock.now()
        if now - self._last_prune >= PRUNE_EVERY:
            self._last_prune = now
            removed = self.store.prune(int((now - self.config.store.retention) * 1000))
            if removed:
                log.info("pruned %d samples older than the retention", removed)

    async def _tick_loop(self) -> None:
        interval = self.config.alerting.evaluate_interval
        while True:
            await asyncio.sleep(interval)
            try:
                self.tick()
            except StoreError as exc:
                log.error("alert evaluation skipped: %s", exc)

    def _record(self, change: Change) -> None:
        try:
            self.store.record_alert(change.alert, int(self.clock.now() * 1000))
        except StoreError as exc:
            log.error("alert history not recorded: %s", exc)


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("alert evaluation stopped: %r", task.exception())
