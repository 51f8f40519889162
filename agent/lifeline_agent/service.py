"""The running agent wired together: probes, sources, netlink, the health model, warnings, batches.

``AgentService.run(stop)`` runs until ``stop`` is set, then stops probing, spools the last batch
and closes everything. ``once()`` probes every target one time and returns the batch it would
send, touching neither spool nor network.

What runs, all on one event loop (anything that blocks goes to a thread), and where it lives::

    scheduler ─ probe rounds ─▶ runner ─▶ recorder (lifeline_probe_*)             probes/
                                  └─────▶ health.observe_probe ─┐ flips: evaluate now
    sources (1–5 s; absent 60s) ─▶ recorder + health.observe_facts ─┤             sources/poller.py
    netlink event ─▶ re-read sources, re-discover, re-probe, evaluate             watchers/reactions.py,
                                                                                  discovery.py
    evaluate (1 Hz) ─▶ health samples, failover, lifeline_vpn_up ─▶ recorder      vpn_up.py
                   ├─▶ health events ─▶ recorder + a priority batch at once
                   │                 └─▶ traceroute toward the VPN and CAD        forensics.py
                   └─▶ the dispatcher's warning (log, status.json, desktop)       warn.py
    status.json (1 s, atomic)                                                     status.py
    batches (batch_interval) + own metrics ─▶ spool ─▶ shipper                    self_metrics.py, delivery/
    heartbeat beats over every path                                               heartbeat.py
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any

from lifeline_agent import __version__
from lifeline_agent.clock import Clock, SystemClock, now_ms, pause
from lifeline_agent.config import AgentConfig, Target
from lifeline_agent.delivery.batcher import Batcher, new_boot_id
from lifeline_agent.delivery.shipper import Shipper
from lifeline_agent.delivery.spool import MemorySpool, Spool, open_spool
from lifeline_agent.delivery.transport import Transport
from lifeline_agent.discovery import Discovery
from lifeline_agent.forensics import Forensics, report_trace, trace_destinations
from lifeline_agent.health import Assessment, HealthModel
from lifeline_agent.health.facts import SOURCES as HEALTH_SOURCES
from lifeline_agent.heartbeat import Sender, sender_for
from lifeline_agent.metrics import MetricsServer, registry_for
from lifeline_agent.probes import REGISTRY, ProbeResult
from lifeline_agent.probes.runner import ProbeRunner, ResultHook, TargetState
from lifeline_agent.probes.scheduler import Scheduler
from lifeline_agent.recorder import Recorder
from lifeline_agent.runtime import tune_malloc
from lifeline_agent.self_metrics import SelfMetrics
from lifeline_agent.sources import Source, build_sources
from lifeline_agent.sources.poller import SourcePoller, close_sources
from lifeline_agent.sources.routes import CadRouteLog
from lifeline_agent.status import status_document, write_status, write_status_every_second
from lifeline_agent.vpn_up import record_vpn_up
from lifeline_agent.warn import Warner
from lifeline_agent.watchers.reactions import NetlinkReactions, WatcherFactory
from lifeline_wire import Batch

log = logging.getLogger(__name__)


class AgentService:
    """Builds the agent's parts, passes each what it needs, and runs their loops."""

    def __init__(
        self,
        config: AgentConfig,
        targets: tuple[Target, ...] | None = None,
        *,
        clock: Clock | None = None,
        spool: Spool | None = None,
        transport: Transport | None = None,
        token: str | None = None,
        sources: Sequence[Source] | None = None,
        watcher_factory: WatcherFactory | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.discovery = Discovery(config, targets, REGISTRY)
        self.boot_id = new_boot_id()
        self.recorder = Recorder(self.clock)
        self.runner = ProbeRunner(self.recorder, self.clock)
        self.health = HealthModel(config.thresholds, self.clock, position=config.agent.position)
        self.forensics = Forensics(
            lambda trace, layer: report_trace(self.recorder, trace, layer, self.discovery.vpn_endpoints),
            enabled=config.providers.traceroute,
            clock=self.clock,
        )
        self.warner = Warner(desktop=config.providers.desktop_notify, clock=self.clock)
        self._spool = spool
        self._transport = transport
        self._token = token
        given = list(sources) if sources is not None else None
        self.poller = SourcePoller(
            self.recorder,
            self.clock,
            (lambda: given) if given is not None else (lambda: build_sources(config)),
            self._on_facts,
        )
        self.netlink = NetlinkReactions(
            self.recorder,
            self.poller,
            rediscover=self.rediscover,
            reprobe=lambda: self.scheduler.poke() if self.scheduler is not None else [],
            evaluate=self.request_evaluation,
            factory=watcher_factory,
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self.shipper: Shipper | None = None
        self.heartbeat: Sender | None = None
        self.scheduler: Scheduler | None = None
        self.self_metrics = SelfMetrics(
            self.recorder, self.clock, config.agent.position, self.runner, self.poller.providers, spool
        )
        self.cad_routes = CadRouteLog()
        self._evaluation_due = False
        self._overdue_check: asyncio.TimerHandle | None = None
        self.runner.subscribe(self._on_result)

    # -- seams for other modules --------------------------------------------------------------

    def subscribe(self, hook: ResultHook) -> None:
        """Every ProbeResult, after the runner accounted for it (see ProbeRunner.subscribe)."""
        self.runner.subscribe(hook)

    def flush_now(self, priority: bool = True) -> None:
        """Cut, spool and ship a batch at once (a state change must not wait for the interval)."""
        self._spawn(self._flush(priority))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_result(self, target: Target, result: ProbeResult, state: TargetState) -> None:
        self.health.observe_probe(target, result)
        if self._batcher is None:
            return  # one-shot use: no evaluation loop
        # A CAD target going down or coming back is what supervisors wait for: send it now.
        if state.changed and target.role == "cad":
            self.flush_now(priority=True)
        # Judge at once when a probe flips, and while one keeps failing, so a hard cut is named
        # within the round that crosses the fail hold instead of at the next 1 Hz tick.
        if state.changed or not result.success:
            self.request_evaluation()

    # -- health -------------------------------------------------------------------------------

    def request_evaluation(self) -> None:
        """Evaluate on the next turn of the loop (requests in the same turn are merged)."""
        if not self._evaluation_due:
            self._evaluation_due = True
            asyncio.get_running_loop().call_soon(self._evaluate, False)

    def _evaluate(self, periodic: bool = True) -> Assessment:
        self._evaluation_due = False
        assessment = self.health.evaluate()
        events = self.health.events()
        ts = int(assessment.at * 1000)
        # Samples at every periodic evaluation and with every change; the extra evaluations
        # between ticks only decide sooner.
        if periodic or events:
            for sample in self.health.samples(include_mos=False):  # the runner emits the MOS
                self.recorder.sample(sample.name, sample.number, sample.labels, sample.ts_ms)
            if assessment.backup_ready is not None:
                self.recorder.sample("lifeline_failover_ready", float(assessment.backup_ready), {}, ts)
            if self.scheduler is not None:
                vpn = self.poller.facts.get("vpn")
                record_vpn_up(self.recorder, vpn, self.scheduler.targets, self.runner.states, ts)
        for event in events:
            self.recorder.event(event.type, event.attributes, event.ts_ms)
            if event.type == "health.layer":
                self.forensics.on_layer(
                    str(event.attributes.get("layer")),
                    str(event.attributes.get("state")),
                    trace_destinations(self.discovery.vpn_endpoints, self.discovery.targets),
                )
        self.warner.update(assessment.warning)
        if self.shipper is not None:
            failed = {s.layer for s in assessment.layers if s.state == "failed"}
            primary_down = not assessment.on_backup and bool(failed & {"link", "router", "internet"})
            tunnel_down = not primary_down and bool(failed & {"vpn", "agency"})
            self.shipper.paths.hint(primary_down, tunnel_down)
        if events:
            self.flush_now(priority=True)
        self._check_when_overdue()
        return assessment

    def _check_when_overdue(self) -> None:
        """While a target fails, evaluate again the moment its next round is overdue: a cut is
        then named without waiting for that round's timeout or the next tick."""
        if self._batcher is None:
            return  # one-shot use: no loop to schedule on
        wake = self.health.next_check()
        if wake is None:
            return
        loop = asyncio.get_running_loop()
        at = loop.time() + max(0.0, wake - self.clock.monotonic())
        handle = self._overdue_check
        if handle is not None and not handle.cancelled() and loop.time() < handle.when() <= at:
            return  # an earlier (or the same) check is still to come
        if handle is not None:
            handle.cancel()
        self._overdue_check = loop.call_at(at, self.request_evaluation)

    async def _evaluate_loop(self, stop: asyncio.Event) -> None:
        interval = self.config.schedule.evaluate_interval
        while not stop.is_set():
            self._evaluate(periodic=True)
            await pause(stop, interval)

    # -- sources ------------------------------------------------------------------------------

    def _on_facts(self, name: str, facts: Any) -> None:
        if name in HEALTH_SOURCES:
            for problem in self.health.observe_facts(name, facts):
                log.debug("facts of %s: %s", name, problem, extra={"integration": name})
        if name == "routes":
            self.cad_routes.update(facts)
        if name == "vpn" and self.discovery.saw_vpn_endpoints(
            tuple(getattr(facts, "endpoints", lambda: ())())
        ):
            self.rediscover()

    # -- discovery ----------------------------------------------------------------------------

    def rediscover(self) -> None:
        """Re-run discovery (gateways, VPN endpoints) and start or stop the targets that changed."""
        if self.discovery.enabled and self.scheduler is not None:
            self.discovery.rediscover(self.scheduler, self.recorder, self._forget_target)

    def _forget_target(self, name: str) -> None:
        self.health.forget_target(name)
        self.recorder.forget_target(name)

    # -- one shot -------------------------------------------------------------------------------

    async def once(self) -> Batch:
        """Probe every target once (concurrently) and return the batch that would be sent."""
        await asyncio.gather(*(self.runner.run_once(t) for t in self.discovery.targets))
        batcher = Batcher(
            self.config.agent.id,
            self.boot_id,
            self.recorder,
            MemorySpool(),
            self.clock,
            self.self_metrics.record,
        )
        return batcher.cut()[0]

    # -- the long run ---------------------------------------------------------------------------

    _batcher: Batcher | None = None
    metrics_server: MetricsServer | None = None

    async def run(self, stop: asyncio.Event) -> None:
        tune_malloc()  # before any worker thread allocates
        config = self.config
        os.makedirs(config.agent.state_dir, exist_ok=True)
        spool = self._spool = self._spool or open_spool(config)
        token = self._token if self._token is not None else config.agent.read_token()
        self.shipper = Shipper(config.agent, config.collector, spool, token, self._transport, self.clock)
        self.self_metrics.spool, self.self_metrics.shipper = spool, self.shipper
        self._batcher = batcher = Batcher(
            config.agent.id,
            self.boot_id,
            self.recorder,
            spool,
            self.clock,
            before_cut=self.self_metrics.record,
            after_spool=self.shipper.wake,
        )
        self.recorder.event(
            "agent.start",
            {
                "version": __version__,
                "boot_id": self.boot_id,
                "targets": len(self.discovery.targets),
                "pid": os.getpid(),
            },
        )
        server = self.metrics_server = self._start_metrics()
        log.info(
            "agent %s started: %d targets, boot %s, spool %s",
            config.agent.id,
            len(self.discovery.targets),
            self.boot_id,
            config.spool_path,
            extra={"agent": config.agent.id, "boot_id": self.boot_id},
        )
        sources = await asyncio.to_thread(self.poller.sources)
        await asyncio.to_thread(self.poller.check_providers, sources)
        ok, reason = await asyncio.to_thread(self.forensics.check)
        self.poller.set_provider("traceroute", ok, reason)
        self.poller.set_provider("desktop_notify", self.warner.check(), self.warner.desktop_reason)
        self.scheduler = scheduler = Scheduler(self.discovery.targets, self.runner, self.clock)
        # The VPN endpoints decide discovered targets: read the VPN once before probing starts.
        for source in sources:
            if source.name == "vpn":
                await self.poller.read(source)
        await self.netlink.start(config.providers.netlink)
        self.poller.log_providers()
        self.heartbeat = sender_for(
            config, self.boot_id, token, self.shipper, self.clock, lambda: self.health.last
        )
        background = [
            asyncio.create_task(scheduler.run(), name="scheduler"),
            asyncio.create_task(self._evaluate_loop(stop), name="evaluate"),
            asyncio.create_task(self.poller.provider_loop(sources, stop), name="providers"),
        ]
        for loop in self.poller.loops(sources, stop, self.netlink.watching):
            background.append(asyncio.create_task(loop, name="sources"))
        if self.netlink.watcher is not None:
            background.append(asyncio.create_task(self.netlink.run(stop), name="netlink"))
        if self.heartbeat is not None:
            background.append(asyncio.create_task(self.heartbeat.run(stop), name="heartbeat"))
        batching = asyncio.create_task(self._batch_loop(batcher, stop), name="batcher")
        shipping = asyncio.create_task(self.shipper.run(stop), name="shipper")
        status = asyncio.create_task(
            write_status_every_second(config.agent.state_dir, self.status, stop), name="status"
        )
        for task in (*background, batching, status):
            task.add_done_callback(_log_crash)
        try:
            await stop.wait()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await asyncio.to_thread(close_sources, sources)
            await self.netlink.stop()
            await self.forensics.aclose()
            await self.warner.aclose()
            await asyncio.gather(batching, status, return_exceptions=True)
            for task in list(self._tasks):
                await asyncio.gather(task, return_exceptions=True)
            self.recorder.event("agent.stop", {"boot_id": self.boot_id})
            await batcher.flush()  # the last batch reaches the spool before we exit
            shipping.cancel()
            await asyncio.gather(shipping, return_exceptions=True)
            await self.shipper.aclose()
            write_status(config.agent.state_dir, self.status(running=False))
            if server is not None:
                server.close()
            waiting = spool.depth()
            spool.close()
            log.info("agent stopped; %d batches wait in the spool", waiting)

    def _start_metrics(self) -> MetricsServer | None:
        listen = self.config.metrics.listen
        if not (self.config.metrics.enabled and listen):
            return None
        try:
            server = MetricsServer(listen, registry_for(self.recorder, self.self_metrics.values))
        except OSError as exc:
            log.error("cannot serve /metrics on %s: %s (carrying on without it)", listen, exc.strerror)
            return None
        host = listen.rpartition(":")[0] or "127.0.0.1"
        log.info("local metrics on http://%s:%d/metrics", host, server.port)
        return server

    async def _batch_loop(self, batcher: Batcher, stop: asyncio.Event) -> None:
        interval = self.config.schedule.batch_interval
        while not stop.is_set():
            await pause(stop, interval)
            if not stop.is_set():
                await batcher.flush()

    async def _flush(self, priority: bool) -> None:
        if self._batcher is not None:
            await self._batcher.flush(priority)

    def status(self, running: bool = True) -> dict[str, Any]:
        """The status.json document as of now."""
        return status_document(
            self.config,
            self.boot_id,
            running=running,
            updated_ms=now_ms(self.clock),
            assessment=self.health.last,
            warning=self.warner.status(),
            providers=self.poller.providers,
            routes=self.poller.facts.get("routes"),
            targets=[self.runner.state(t).snapshot() for t in self.discovery.targets],
            spool=self._spool,
            shipper=self.shipper,
            heartbeat=self.heartbeat.status() if self.heartbeat is not None else None,
        )


def _log_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("agent task %s stopped: %r", task.get_name(), task.exception(), exc_info=task.exception())
