"""The running collector: store, fleet view, ingest, alert engine and notifiers wired together.

Over PostgreSQL several collectors run side by side: each serves everything (ingest, heartbeats,
the board, the API) and shares its fleet view (lifeline_collector.replica); the one holding the
lease (lifeline_collector.leader) evaluates alerts and notifies. The others keep their alert
view read from the database, for their board and API.

Over 500 lines on purpose: the wiring, the ticks and the lease hand-over of the running collector
read as one sequence; each part it wires lives in its own package.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any

from lifeline_collector.alerting import actions
from lifeline_collector.alerting.alert import Alert
from lifeline_collector.alerting.engine import AlertEngine
from lifeline_collector.alerting.errors import UnknownAlertError
from lifeline_collector.alerting.heard import SilenceWatch
from lifeline_collector.alerting.incidents import FleetCorrelator, FleetPolicy
from lifeline_collector.alerting.notifications import AlertStatus
from lifeline_collector.alerting.routing import Router
from lifeline_collector.alerting.rules.cad_at_risk import CadAtRisk, RiskBands
from lifeline_collector.alerting.rules.cad_target_unreachable import CadTargetUnreachable
from lifeline_collector.alerting.rules.failover_not_ready import FailoverNotReady
from lifeline_collector.alerting.rules.position_layer_failed import PositionLayerFailed
from lifeline_collector.alerting.rules.position_silent import PositionSilent
from lifeline_collector.alerting.silences import Ack, Matcher, Registry, Silence
from lifeline_collector.alerting.state import Change
from lifeline_collector.alerting.store import AlertStore
from lifeline_collector.clock import Clock, SystemClock
from lifeline_collector.config import CollectorConfig, split_listen
from lifeline_collector.errors import StoreError
from lifeline_collector.fleet import AgentView, Fleet, SharedBeat
from lifeline_collector.heartbeat import Heartbeats, listen_address
from lifeline_collector.ingest.commit import Ingestor
from lifeline_collector.leader import Fence, FencedNotifier, Leadership
from lifeline_collector.notify import REGISTRY, Notifier, NotifyContext
from lifeline_collector.notify.dispatch import Dispatcher
from lifeline_collector.remote_write.durable import DurableRemoteWriter
from lifeline_collector.replica import Reported, SharedFleet
from lifeline_collector.self_metrics import Stats
from lifeline_collector.store import AgentRow, Store
from lifeline_collector.store.codec import decode_states
from lifeline_wire import Envelope, IngestResponse

log = logging.getLogger("lifeline_collector")

PRUNE_EVERY = 3600.0


class Collector:
    def __init__(self, config: CollectorConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.store = Store(config.store.location, pool_size=config.store.pool_size)
        self.alert_store = AlertStore(self.store)
        self.fleet = Fleet.load(self.store)
        self.stats = Stats()
        self._context = NotifyContext(
            external_url=config.server.public_url,
            clock=self.clock,
            resend_interval=config.alerting.resend_interval,
        )
        # Over PostgreSQL every collector serves and shares its fleet view; only the holder of the
        # lease evaluates and notifies (lifeline_collector.leader). One SQLite process always leads.
        self.shared = config.store.backend == "postgresql"
        self.leadership: Leadership | None = Leadership(config.store.dsn) if self.shared else None
        self.fence = Fence(self.leadership.held if self.leadership is not None else lambda: True)
        self.leading = not self.shared
        self.dispatcher = self._dispatcher(None)
        self._build_alerting(self.clock.now())
        self.ingestor = Ingestor(self.store, self.fleet, self.stats, self.clock, config.limits)
        self.remote_writer: DurableRemoteWriter | None = None
        if config.remote_write.enabled:
            # Woken after each commit; it also polls, so the leader sends what others stored too.
            self.ingestor.on_stored.append(lambda _stored: self._wake_remote_writer())
            if not self.shared:
                self.remote_writer = self._remote_writer()
        self.heartbeats = Heartbeats(
            config.heartbeat,
            listen_address(config.heartbeat.listen or config.server.listen, split_listen),
            config.store.path,
            self.fleet,
            self.clock,
            self.heard,
        )
        self.heartbeats.refresh(self.store.token_hashes())
        self.replica: SharedFleet | None = None
        if self.shared:
            self.replica = SharedFleet(
                config.store.dsn, self.fleet, self.heartbeats.receiver, self.clock, self._shared
            )
        self._data_version = self.store.data_version()
        self._last_prune = self.clock.now()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._silence_task: asyncio.Task[None] | None = None
        self._stopping = threading.Event()
        self._winding_down: set[asyncio.Task[None]] = set()

    def _dispatcher(self, term: int | None) -> Dispatcher:
        """Notifiers for one term of leadership (fenced to it), or plain ones for SQLite."""
        notifiers: list[Notifier] = [REGISTRY[n.kind].build(n, self._context) for n in self.config.notifiers]
        if self.shared:
            # Term None (not leading): notifiers that never send; the engine does not call them.
            notifiers = [FencedNotifier(n, self.fence, -1 if term is None else term) for n in notifiers]
        return Dispatcher(notifiers, self.stats)

    def _remote_writer(self) -> DurableRemoteWriter:
        # Reads the store after a cursor, so samples keep their original timestamps and a
        # restart or a long receiver outage resends from where it stopped. Over PostgreSQL the
        # cursor is in the database and only the leader sends: the next one resumes there.
        shared = self.store.cursor("remote_write_cursor") if self.shared else None
        return DurableRemoteWriter(self.config.remote_write, self.store, shared)

    def _wake_remote_writer(self) -> None:
        if self.remote_writer is not None:
            self.remote_writer.wake()

    def _build_alerting(self, now: float, *, strict: bool = False) -> None:
        """Silences, acknowledgements, the rules and the engine, with the alerts active in the
        store restored: at start, and each time this collector starts to lead (the same state a
        restarted collector reads back, so what was paged is not paged again)."""
        config = self.config
        public_url = config.server.public_url
        alerting = config.alerting
        holds = alerting.holds
        self.registry = Registry(
            self.alert_store.silences(since_ms=round(now * 1000)), self.alert_store.acks()
        )
        self.position_silent = PositionSilent(
            alerting.silent_after, public_url, started_at=now, heartbeat_after=alerting.heartbeat_silent_after
        )
        # Positions turning silent are found from a heap of deadlines, not a sweep of the fleet.
        self.silence = SilenceWatch(self.position_silent.policy)
        previous = getattr(self, "engine", None)
        self.engine = AlertEngine(
            [
                CadTargetUnreachable(alerting.cad_failures, public_url),
                self.position_silent,
                CadAtRisk(
                    RiskBands(alerting.risk_warn, alerting.risk_page, alerting.page_time_to_loss),
                    public_url,
                    holds["CadAtRisk"],
                ),
                PositionLayerFailed(public_url, holds["PositionLayerFailed"], holds["PositionLayerFailed"]),
                FailoverNotReady(public_url, holds["FailoverNotReady"]),
            ],
            self.clock,
            resend_interval=alerting.resend_interval,
            resolve_hold=alerting.resolve_hold,
            quiet_for=alerting.silent_after,
            deliver=lambda group: self.dispatcher.submit(group),  # the dispatcher of the current term
            # What the board hooked into the engine it saw (install) stays hooked.
            record=self._record if previous is None else previous.record,
            correlator=FleetCorrelator(
                FleetPolicy(
                    alerting.fleet_min_positions,
                    alerting.fleet_min_ratio,
                    alerting.fleet_window,
                    alerting.silent_after,
                ),
                public_url,
                holds["FleetIncident"],
                self.position_silent.policy,
            ),
            router=Router(config.routes),
            registry=self.registry,
            on_status=self._status,
        )
        self._restore(strict=strict)
        self.silence.watch_all(self.fleet.agents.values())

    async def start(self, *, ticker: bool = True) -> None:
        """Start notifier workers and (unless a test drives ``tick``) the evaluation tick; over
        PostgreSQL also fleet sharing and the contest for the lease."""
        self._loop = asyncio.get_running_loop()
        self.dispatcher.start()
        if self.remote_writer is not None:
            self.remote_writer.start()
        self.heartbeats.start()
        if self.replica is not None:
            self.replica.start()
        if ticker:
            self._ticker = asyncio.create_task(self._tick_loop(), name="alert-tick")
            self._ticker.add_done_callback(_report_crash)
            self._silence_task = asyncio.create_task(self._silence_loop(), name="silence-check")
            self._silence_task.add_done_callback(_report_crash)
        if self.leadership is not None:
            self._stopping.clear()
            self.leadership.run(self._gained, self._lost, self._stopping)

    async def stop(self) -> None:
        self._stopping.set()
        self.fence.term = None
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        if self._silence_task is not None:
            self._silence_task.cancel()
            await asyncio.gather(self._silence_task, return_exceptions=True)
            self._silence_task = None
        self.heartbeats.stop()
        if self.replica is not None:
            await asyncio.to_thread(self.replica.stop)
        self._loop = None  # the receiver thread is gone: nothing calls ``heard`` any more
        await self.dispatcher.stop()
        if self.remote_writer is not None:
            await self.remote_writer.drain()
        if self.leadership is not None:
            self.leadership.release()
        self.store.close()

    # --- leading: only the lease holder evaluates and notifies ---------------------------------

    def _gained(self, epoch: int) -> None:
        """From the lease thread: this process leads from now on (the loop takes it over)."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._take_lead, epoch)

    def _lost(self, epoch: int) -> None:
        """From the lease thread, the moment the lease is found gone: fence first (no notifier of
        this term sends from now on), then let the loop step down."""
        if self.fence.term == epoch:
            self.fence.term = None
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._step_down, epoch)

    def _take_lead(self, epoch: int) -> None:
        if self._stopping.is_set():
            return
        now = self.clock.now()
        try:
            self.fleet.sync_agents(self.store.agents())
            self._build_alerting(now, strict=True)
        except StoreError as exc:
            # Not able to read what was paged: leading now could page it twice. Give the lease up;
            # the contest goes on (this process or another gets it once the store answers).
            log.error("cannot take over alerting (epoch %d): %s; giving the lease up", epoch, exc)
            if self.leadership is not None:
                self.leadership.release()
            return
        old = self.dispatcher
        self.dispatcher = self._dispatcher(epoch)
        self.dispatcher.start()
        self._background(old.stop(flush_timeout=0.0))
        if self.config.remote_write.enabled:
            self.remote_writer = self._remote_writer()
            self.remote_writer.start()
        self.fence.term = epoch
        self.leading = True
        log.info("evaluating alerts and notifying (epoch %d)", epoch)

    def _step_down(self, epoch: int) -> None:
        if self.fence.term == epoch:
            self.fence.term = None
        if not self.leading:
            return
        self.leading = False
        old = self.dispatcher
        self.dispatcher = self._dispatcher(None)
        self.dispatcher.start()
        self._background(old.stop(flush_timeout=0.0))
        writer, self.remote_writer = self.remote_writer, None
        if writer is not None:
            self._background(writer.drain(timeout=1.0))
        log.warning("stepped down (epoch %d): serving, not evaluating; contending again", epoch)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Wind down what a term left running, off the caller's path (held until it ends)."""
        task = asyncio.get_running_loop().create_task(work)
        self._winding_down.add(task)
        task.add_done_callback(self._winding_down.discard)

    # --- serving ---------------------------------------------------------------------------------

    def ingest(self, agent: AgentRow, envelope: Envelope) -> IngestResponse:
        """Store a request and evaluate that agent's alerts at once (no waiting for the tick)."""
        response, stored = self.ingestor.ingest(agent, envelope)
        self.evaluate_reported([stored.agent])
        return response

    def evaluate_reported(self, agents: list[AgentView]) -> None:
        """Judge agents that just reported, and watch their silence from this report."""
        if not self.leading:
            return
        self.engine.evaluate(agents)
        for agent in agents:
            self.silence.watch(agent)

    def heard(self, agent_id: str) -> None:
        """A valid heartbeat from ``agent_id`` after a gap (or its first since start). Called from
        the heartbeat receiver's thread: hand work to the event loop, never block here."""
        loop = self._loop
        if loop is None:  # not serving (tests drive the collector by hand): on this thread
            self.heard_now(agent_id)
        else:
            loop.call_soon_threadsafe(self.heard_now, agent_id)

    def heard_now(self, agent_id: str) -> None:
        """On the event loop: watch the agent's silence from its new beat, and re-evaluate it at
        once if it holds an alert (a silent position heard again)."""
        agent = self.fleet.agents.get(agent_id)
        if agent is None or not self.leading:
            return
        self.silence.watch(agent)
        if self.engine.states.holds(agent_id):
            self.engine.evaluate([agent])

    def _shared(self, beats: list[SharedBeat], reported: list[Reported]) -> None:
        """From the fleet-sharing thread: what other collectors stored and heard."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._merge, beats, reported)

    def _merge(self, beats: list[SharedBeat], reported: list[Reported]) -> None:
        """On the event loop: take what is newer into the fleet view; the leader judges the
        positions that reported elsewhere at once, and follows the silence of those heard."""
        stored: list[AgentView] = []
        for row in reported:
            view = self.fleet.agents.get(row.agent)
            if view is None or (view.last_seen is not None and row.seen <= view.last_seen):
                continue
            try:
                states = decode_states(row.states, row.agent) if row.states is not None else []
            except StoreError as exc:
                log.error("latest values of %s not shared: %s", row.agent, exc)
                continue
            merged = self.fleet.merge_reported(row.agent, row.seen, row.clock_offset, states)
            if merged is not None:
                stored.append(merged)
        self.evaluate_reported(stored)
        for beat in beats:
            if self.fleet.merge_beat(beat) is not None:
                self.heard_now(beat.agent)

    def check_silence(self) -> None:
        """Evaluate the positions whose silence began since the last check."""
        if not self.leading:
            return
        now = self.clock.now()
        if self.replica is not None and not self.replica.current(now):
            return  # beats other collectors received are not in view: a silence cannot be told
        due = self.silence.due(now, self.fleet.agents.get)
        if due:
            self.engine.evaluate(due)

    def tick(self) -> None:
        """Once per evaluate_interval: follow the agent registry, find silence, resend, prune."""
        version = self.store.data_version()
        changed = version != self._data_version
        if changed:  # another process (agents add/revoke/rename, another collector) committed
            self._data_version = version
            self.store.forget_tokens()
            self.fleet.sync_agents(self.store.agents())
            self.heartbeats.refresh(self.store.token_hashes())
            self.registry.load(
                self.alert_store.silences(since_ms=round(self.clock.now() * 1000)), self.alert_store.acks()
            )
        if not self.leading:
            if changed:  # the alerts the leader recorded, for this collector's board and API
                self._build_alerting(self.clock.now())
            return
        if changed:
            self.silence.watch_all(self.fleet.agents.values())
        self.check_silence()
        self.engine.evaluate_fleet(self.fleet.agents, full=changed)
        self.engine.tick()
        now = self.clock.now()
        if now - self._last_prune >= PRUNE_EVERY:
            self._last_prune = now
            removed = self.store.prune(int((now - self.config.store.retention) * 1000))
            if removed:
                log.info("pruned %d samples older than the retention", removed)

    def _tick_engine(self) -> None:
        """What an operator's change releases or holds back (only the leader notifies)."""
        if self.leading:
            self.engine.tick()

    async def _tick_loop(self) -> None:
        interval = self.config.alerting.evaluate_interval
        last_error = ""  # the same failure every tick is logged once
        while True:
            await asyncio.sleep(interval)
            try:
                self.tick()
            except StoreError as exc:
                if str(exc) != last_error:
                    log.error("alert evaluation skipped: %s", exc)
                last_error = str(exc)
            except Exception as exc:  # the tick pages for every position: it must outlive any bug
                if repr(exc) != last_error:
                    log.exception("alert evaluation failed (tick goes on)")
                last_error = repr(exc)
            else:
                last_error = ""

    async def _silence_loop(self) -> None:
        # Sub-second: a total cut must page within ~3 s, and the tick runs once a second.
        interval = self.config.alerting.silence_check_interval
        while True:
            await asyncio.sleep(interval)
            try:
                self.check_silence()
            except StoreError as exc:
                log.error("silence check skipped: %s", exc)
            except Exception:  # as the tick: finding silence for everyone must outlive any bug
                log.exception("silence check failed (it goes on)")
                await asyncio.sleep(1.0)  # not a log line every 0.2 s while it keeps failing

    # --- operators: silences and acknowledgements ----------------------------------------------

    def add_silence(
        self,
        matchers: list[Matcher],
        *,
        created_by: str,
        comment: str = "",
        starts_at: float | None = None,
        ends_at: float | None = None,
        duration: float | None = None,
    ) -> Silence:
        silence = actions.create_silence(
            self.alert_store,
            matchers,
            now=self.clock.now(),
            duration=duration,
            starts_at=starts_at,
            ends_at=ends_at,
            created_by=created_by,
            comment=comment,
        )
        self.registry.silences[silence.id] = silence
        log.info(
            "silence %s added by %s: %s", silence.id, silence.created_by, ",".join(map(str, silence.matchers))
        )
        self._tick_engine()
        return silence

    def expire_silence(self, silence_id: str) -> None:
        actions.expire_silence(self.alert_store, silence_id, now=self.clock.now())
        self.registry.silences.pop(silence_id, None)
        log.info("silence %s expired", silence_id)
        self._tick_engine()  # what it held back and still fires is paged now

    def silences(self, *, include_expired: bool = False) -> list[Silence]:
        return self.alert_store.silences(since_ms=None if include_expired else round(self.clock.now() * 1000))

    def acknowledge(self, fingerprint: str, *, by: str, comment: str = "") -> tuple[Alert, Ack]:
        alert = self.engine.states.get(fingerprint)
        if alert is None:
            raise UnknownAlertError(fingerprint)
        ack = actions.acknowledge(
            self.alert_store, fingerprint, by=by, comment=comment, now=self.clock.now(), alert=alert
        )
        self.registry.acks[fingerprint] = ack
        log.info("alert %s %s acknowledged by %s", alert.name, fingerprint, ack.by)
        self._tick_engine()
        return alert, ack

    # --- bookkeeping ---------------------------------------------------------------------------

    def _restore(self, *, strict: bool = False) -> None:
        """Alerts active at the last stop come back with what was paged, so a restart re-pages
        nothing. ``strict``: a store that cannot say raises (a collector taking over must not lead
        without knowing what was paged)."""
        try:
            saved = self.alert_store.active_alerts()
        except StoreError as exc:
            if strict:
                raise
            log.error("active alerts not restored: %s", exc)
            return
        self.engine.states.restore(alert for alert, _status in saved)
        alerts = [alert for alert, _status in saved]
        self.engine.outages.restore(alerts)
        # A silence that paged before the restart goes on until the position is heard again.
        paged = [alert for alert in alerts if alert.fired_at is not None]
        self.position_silent.restored.update(a.scope for a in paged if a.name == PositionSilent.name)
        for alert, status in saved:
            notified_at = status.get("notified_at")
            receivers = status.get("receivers")
            self.engine.notifications.restore(
                alert.fingerprint,
                float(notified_at) if isinstance(notified_at, int | float) else None,
                tuple(str(r) for r in receivers) if isinstance(receivers, list) else None,
            )
        if saved:
            log.info("restored %d active alert(s)", len(saved))

    def _record(self, change: Change) -> None:
        try:
            self.alert_store.record_alert(change.alert, int(self.clock.now() * 1000))
            self.alert_store.save_active(change.alert)
        except StoreError as exc:
            log.error("alert history not recorded: %s", exc)

    def _status(self, alert: Alert, status: AlertStatus) -> None:
        body = status.to_json()
        body["notified_at"] = self.engine.notifications.notified_at(alert.fingerprint)
        receivers = self.engine.notifications.receivers_of(alert.fingerprint)
        body["receivers"] = None if receivers is None else list(receivers)
        try:
            self.alert_store.save_status(alert.fingerprint, body)
        except StoreError as exc:
            log.error("alert status not recorded: %s", exc)


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("alert evaluation stopped: %r", task.exception())
