"""The agent's own metrics: version, probe errors, providers, spool and delivery counters.

Read at the moment they are needed — by /metrics at each scrape and before every batch is cut —
rather than sampled on a timer, so a batch carries the spool depth and send counters of its cut.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lifeline_agent import __version__
from lifeline_agent.clock import Clock, now_ms
from lifeline_agent.delivery.shipper import FAILURE_REASONS, Shipper
from lifeline_agent.delivery.spool import Spool
from lifeline_agent.probes.runner import ProbeRunner
from lifeline_agent.recorder import Recorder, SeriesKey, series_key


@dataclass
class SelfMetrics:
    """``spool`` and ``shipper`` are set once the agent runs (a one-shot run has neither)."""

    recorder: Recorder
    clock: Clock
    position: str
    runner: ProbeRunner
    providers: Mapping[str, tuple[bool, str]]  # name → (available, reason), kept current elsewhere
    spool: Spool | None = None
    shipper: Shipper | None = None

    def values(self) -> dict[SeriesKey, float]:
        """The agent's own metrics as of now (for /metrics and for every batch)."""
        values: dict[SeriesKey, float] = {
            series_key("lifeline_agent_info", {"version": __version__, "position": self.position}): 1.0,
            series_key("lifeline_agent_probe_errors_total", {}): float(self.runner.probe_errors),
        }
        for name, (ok, _reason) in self.providers.items():
            values[series_key("lifeline_provider_available", {"provider": name})] = 1.0 if ok else 0.0
        spool = self.spool
        if spool is not None:
            values[series_key("lifeline_agent_spool_batches", {})] = float(spool.depth())
            values[series_key("lifeline_agent_spool_bytes", {})] = float(spool.size_bytes())
            values[series_key("lifeline_agent_spool_dropped_batches_total", {})] = float(spool.dropped)
            values[series_key("lifeline_agent_spool_unreadable_batches", {})] = float(spool.unreadable)
        if self.shipper is not None:
            stats = self.shipper.stats
            values[series_key("lifeline_agent_batches_sent_total", {})] = float(stats.sent)
            values[series_key("lifeline_agent_batches_rejected_total", {})] = float(stats.rejected)
            for reason in FAILURE_REASONS:
                key = series_key("lifeline_agent_send_failures_total", {"reason": reason})
                values[key] = float(stats.failures[reason])
            shipper_values = getattr(self.shipper, "live_values", None)
            if shipper_values is not None:
                values.update(shipper_values())
        return values

    def record(self) -> None:
        """Put the current values into the recorder (called before a batch is cut)."""
        ts = now_ms(self.clock)
        for (name, labels), value in self.values().items():
            self.recorder.sample(name, value, dict(labels), ts)
