"""The running agent: wires runner, scheduler, batcher, spool, shipper, /metrics and status.json.

``AgentService.run(stop)`` runs until ``stop`` is set, then stops probing, spools the last batch
and closes everything. ``once()`` probes every target one time and returns the batch it would
send, touching neither spool nor network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from lifeline_agent import __version__
from lifeline_agent.clock import Clock, SystemClock, now_ms
from lifeline_agent.config import AgentConfig, Target
from lifeline_agent.discovery import all_targets
from lifeline_agent.metrics import MetricsServer, registry_for
from lifeline_agent.probes import REGISTRY, ProbeResult
from lifeline_agent.recorder import Recorder, SeriesKey, series_key
from lifeline_agent.runner import ProbeRunner, ResultHook, TargetState
from lifeline_agent.scheduler import Batcher, Scheduler, new_boot_id
from lifeline_agent.shipper import FAILURE_REASONS, Shipper, Transport
from lifeline_agent.spool import MemorySpool, Spool, SqliteSpool
from lifeline_wire import Batch

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
STATUS_INTERVAL = 1.0


class AgentService:
    def __init__(
        self,
        config: AgentConfig,
        targets: tuple[Target, ...] | None = None,
        *,
        clock: Clock | None = None,
        spool: Spool | None = None,
        transport: Transport | None = None,
        token: str | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        wanted = all_targets(config) if targets is None else targets
        # A target whose kind has no probe yet is left out rather than shown as failing: a CAD
        # target reported "down" because nobody can probe it would page a supervisor for nothing.
        self.targets = tuple(t for t in wanted if t.kind in REGISTRY)
        self.skipped = tuple(t for t in wanted if t.kind not in REGISTRY)
        self.boot_id = new_boot_id()
        self.recorder = Recorder(self.clock)
        self.runner = ProbeRunner(self.recorder, self.clock)
        self._spool = spool
        self._transport = transport
        self._token = token
        self._tasks: set[asyncio.Task[Any]] = set()
        self.shipper: Shipper | None = None
        self.runner.subscribe(self._on_result)
        for target in self.skipped:
            log.warning(
                "no probe for kind %r yet: target not probed",
                target.kind,
                extra={"probe": target.kind, "target": target.name},
            )

    # -- seams for other modules --------------------------------------------------------------

    def subscribe(self, hook: ResultHook) -> None:
        """Every ProbeResult, after the runner accounted for it (see ProbeRunner.subscribe)."""
        self.runner.subscribe(hook)

    def flush_now(self, priority: bool = True) -> None:
        """Cut, spool and ship a batch at once (a state change must not wait for the interval)."""
        task = asyncio.get_running_loop().create_task(self._flush(priority))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_result(self, target: Target, result: ProbeResult, state: TargetState) -> None:
        # A CAD target going down or coming back is what supervisors wait for: send it now.
        if state.changed and target.role == "cad" and self._batcher is not None:
            self.flush_now(priority=True)

    # -- self metrics ---------------------------------------------------------------------------

    def live_values(self) -> dict[SeriesKey, float]:
        """The agent's own metrics as of now (for /metrics and for every batch)."""
        values: dict[SeriesKey, float] = {
            series_key(
                "lifeline_agent_info", {"version": __version__, "position": self.config.agent.position}
            ): 1.0,
            series_key("lifeline_agent_probe_errors_total", {}): float(self.runner.probe_errors),
        }
        spool = self._spool
        if spool is not None:
            values[series_key("lifeline_agent_spool_batches", {})] = float(spool.depth())
            values[series_key("lifeline_agent_spool_bytes", {})] = float(spool.size_bytes())
            values[series_key("lifeline_agent_spool_dropped_batches_total", {})] = float(spool.dropped)
        if self.shipper is not None:
            stats = self.shipper.stats
            values[series_key("lifeline_agent_batches_sent_total", {})] = float(stats.sent)
            values[series_key("lifeline_agent_batches_rejected_total", {})] = float(stats.rejected)
            for reason in FAILURE_REASONS:
                key = series_key("lifeline_agent_send_failures_total", {"reason": reason})
                values[key] = float(stats.failures[reason])
        return values

    def _record_self(self) -> None:
        ts = now_ms(self.clock)
        for (name, labels), value in self.live_values().items():
            self.recorder.sample(name, value, dict(labels), ts)

    # -- one shot -------------------------------------------------------------------------------

    async def once(self) -> Batch:
        """Probe every target once (concurrently) and return the batch that would be sent."""
        await asyncio.gather(*(self.runner.run_once(t) for t in self.targets))
        batcher = Batcher(
            self.config.agent.id, self.boot_id, self.recorder, MemorySpool(), self.clock, self._record_self
        )
        return batcher.cut()[0]

    # -- the long run ---------------------------------------------------------------------------

    _batcher: Batcher | None = None
    metrics_server: MetricsServer | None = None

    async def run(self, stop: asyncio.Event) -> None:
        config = self.config
        os.makedirs(config.agent.state_dir, exist_ok=True)
        spool = self._spool = self._spool or SqliteSpool(config.spool_path, config.spool.max_bytes)
        token = self._token if self._token is not None else config.agent.read_token()
        self.shipper = Shipper(config.agent, config.collector, spool, token, self._transport, self.clock)
        self._batcher = batcher = Batcher(
            config.agent.id,
            self.boot_id,
            self.recorder,
            spool,
            self.clock,
            before_cut=self._record_self,
            after_spool=self.shipper.wake,
        )
        self.recorder.event(
            "agent.start",
            {
                "version": __version__,
                "boot_id": self.boot_id,
                "targets": len(self.targets),
                "pid": os.getpid(),
            },
        )
        server = self.metrics_server = self._start_metrics()
        log.info(
            "agent %s started: %d targets, boot %s, spool %s",
            config.agent.id,
            len(self.targets),
            self.boot_id,
            config.spool_path,
            extra={"agent": config.agent.id, "boot_id": self.boot_id},
        )
        scheduler = Scheduler(self.targets, self.runner, self.clock)
        probing = asyncio.create_task(scheduler.run(), name="scheduler")
        batching = asyncio.create_task(self._batch_loop(batcher, stop), name="batcher")
        shipping = asyncio.create_task(self.shipper.run(stop), name="shipper")
        status = asyncio.create_task(self._status_loop(stop), name="status")
        try:
            await stop.wait()
        finally:
            probing.cancel()
            await asyncio.gather(probing, return_exceptions=True)
            await asyncio.gather(batching, status, return_exceptions=True)
            for task in list(self._tasks):
                await asyncio.gather(task, return_exceptions=True)
            self.recorder.event("agent.stop", {"boot_id": self.boot_id})
            await batcher.flush()  # the last batch reaches the spool before we exit
            shipping.cancel()
            await asyncio.gather(shipping, return_exceptions=True)
            await self.shipper.aclose()
            self._write_status(running=False)
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
            server = MetricsServer(listen, registry_for(self.recorder, self.live_values))
        except OSError as exc:
            log.error("cannot serve /metrics on %s: %s (carrying on without it)", listen, exc.strerror)
            return None
        log.info("local metrics on http://%s/metrics", listen)
        return server

    async def _batch_loop(self, batcher: Batcher, stop: asyncio.Event) -> None:
        interval = self.config.schedule.batch_interval
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                await batcher.flush()

    async def _status_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self._write_status, True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=STATUS_INTERVAL)

    async def _flush(self, priority: bool) -> None:
        if self._batcher is not None:
            await self._batcher.flush(priority)

    def status(self, running: bool = True) -> dict[str, Any]:
        spool = self._spool
        shipper = self.shipper
        return {
            "agent": self.config.agent.id,
            "site": self.config.agent.site,
            "position": self.config.agent.position,
            "version": __version__,
            "boot_id": self.boot_id,
            "pid": os.getpid(),
            "running": running,
            "updated_ms": now_ms(self.clock),
            "targets": [self.runner.state(t).snapshot() for t in self.targets],
            "spool": {
                "path": self.config.spool_path,
                "batches": spool.depth() if spool is not None else 0,
                "dropped": spool.dropped if spool is not None else 0,
            },
            "delivery": {
                "endpoint": (shipper.endpoints() or [""])[0] if shipper else "",
                "sent": shipper.stats.sent if shipper else 0,
                "rejected": shipper.stats.rejected if shipper else 0,
                "last_ok_ms": shipper.stats.last_ok_ms if shipper else 0,
                "last_error": shipper.stats.last_error if shipper else "",
            },
        }

    def _write_status(self, running: bool = True) -> None:
        path = os.path.join(self.config.agent.state_dir, STATUS_FILE)
        write_json_atomic(path, self.status(running))


def write_json_atomic(path: str, data: Mapping[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
    os.replace(tmp, path)


def read_status(state_dir: str) -> dict[str, Any]:
    """The status the running agent last wrote (raises OSError / ValueError)."""
    with open(os.path.join(state_dir, STATUS_FILE), encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError("status.json is not an object")
    return data
