"""``GET /metrics``: a custom prometheus-client collector over the fleet view, in its own registry.

Every agent series is re-exposed with ``agent`` and ``site`` labels, typed and described from the
catalog. ``lifeline_agent_up`` turns 0 once an agent is silent (so "silent" differs from
"failing"); after ``exposition.stale_after`` the agent's own series are dropped altogether. Of an
``info`` metric only the label sets of the agent's latest report of it are current (a verdict that
changed leaves its old label set behind in the store, not on /metrics).

The alert series carry ``alertname`` and ``site`` and start at zero for every rule and known site,
so a first alert or acknowledgement shows as an increase, not as a new series.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from lifeline_wire.catalog import CATALOG, MetricSpec

if TYPE_CHECKING:
    from lifeline_collector.service import Collector

ALERT_STATES = ("pending", "firing")


def _family(spec: MetricSpec) -> tuple[Metric, str]:
    """A family for ``spec`` and the name its samples carry (counters keep ``_total`` on samples)."""
    if spec.type == "counter":
        base = spec.name.removesuffix("_total")
        return Metric(base, spec.help, "counter"), f"{base}_total"
    return Metric(spec.name, spec.help, "gauge"), spec.name


class FleetCollector:
    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Metric]:
        service = self.collector
        now = service.clock.now()
        policy = service.position_silent.policy
        stale_after = service.config.exposition.stale_after
        own = {name: _family(CATALOG[name]) for name in _OWN_AGENT_METRICS}
        families: dict[str, tuple[Metric, str]] = {}
        for agent in sorted(service.fleet.agents.values(), key=lambda a: a.id):
            base = {"agent": agent.id, "site": agent.site}
            silence = None if agent.last_seen is None else now - agent.last_seen
            up = policy.up(agent, now)  # heartbeats or batches, as PositionSilent judges silence
            _add(own["lifeline_agent_up"], base, 1.0 if up else 0.0)
            _add(own["lifeline_agent_sequence_gaps_total"], base, float(agent.seq.jumps))
            _add(own["lifeline_agent_sequence_missing_batches"], base, float(agent.seq.missing))
            if agent.last_seen is not None:
                _add(own["lifeline_agent_last_seen_timestamp_seconds"], base, agent.last_seen)
            if agent.clock_offset is not None:
                _add(own["lifeline_agent_clock_offset_seconds"], base, agent.clock_offset)
            if silence is None or silence > stale_after:
                continue
            for name, series in agent.series.items():
                spec = CATALOG.get(name)
                if spec is None:  # pragma: no cover - ingest admits catalog names only
                    continue
                family = families.get(name)
                if family is None:
                    family = families[name] = _family(spec)
                states = list(series.values())
                if spec.type == "info" and states:
                    newest = max(state.ts_ms for state in states)
                    states = [state for state in states if state.ts_ms == newest]
                for state in states:
                    _add(family, {**base, **dict(sorted(state.labels.items()))}, state.value)
        for name in sorted(families):
            yield families[name][0]
        for metric, _sample in own.values():
            yield metric
        yield from self._service_metrics()

    def _service_metrics(self) -> Iterator[Metric]:
        stats = self.collector.stats
        batches = _family(CATALOG["lifeline_ingest_batches_total"])
        for result in ("accepted", "duplicate", "rejected"):
            _add(batches, {"result": result}, float(stats.batches[result]))
        yield batches[0]
        requests = _family(CATALOG["lifeline_ingest_requests_total"])
        for code, count in sorted(stats.requests.items()):
            _add(requests, {"code": code}, float(count))
        yield requests[0]
        beats = _family(CATALOG["lifeline_collector_heartbeats_total"])
        for result, count in self.collector.heartbeats.receiver.counts.items():
            _add(beats, {"result": result}, float(count))
        yield beats[0]
        beat_paths = _family(CATALOG["lifeline_collector_heartbeat_paths_total"])
        for path, count in self.collector.heartbeats.receiver.paths.items():
            _add(beat_paths, {"path": path}, float(count))
        yield beat_paths[0]
        rejected = _family(CATALOG["lifeline_collector_rejected_total"])
        for (agent, reason), count in sorted(stats.rejected.items()):
            _add(rejected, {"agent": agent, "reason": reason}, float(count))
        yield rejected[0]
        rule_errors = _family(CATALOG["lifeline_collector_rule_errors_total"])
        engine = self.collector.engine
        for rule in sorted({rule.name for rule in engine.rules} | set(engine.rule_errors)):
            _add(rule_errors, {"rule": rule}, float(engine.rule_errors[rule]))
        yield rule_errors[0]
        names = {rule.name for rule in engine.rules}
        if engine.correlator is not None:
            names.add(engine.correlator.name)
        sites = {agent.site for agent in self.collector.fleet.agents.values()}
        alerts = engine.active()
        sites.update(alert.labels.get("site", "") for alert in alerts)
        names.update(alert.name for alert in alerts)
        grid = [(name, site) for name in sorted(names) for site in sorted(sites)]
        active = _family(CATALOG["lifeline_alerts_active"])
        counts = {(name, site, state): 0 for name, site in grid for state in ALERT_STATES}
        for alert in alerts:
            key = (alert.name, alert.labels.get("site", ""), alert.state.value)
            counts[key] = counts.get(key, 0) + 1
        for (name, site, state), count in sorted(counts.items()):
            _add(active, {"alertname": name, "site": site, "state": state}, float(count))
        yield active[0]
        times = engine.notifications.ack_times
        acks = _family(CATALOG["lifeline_alert_acknowledgements_total"])
        delays = _family(CATALOG["lifeline_alert_acknowledge_seconds_total"])
        for name, site in sorted(set(grid) | set(times.count)):
            labels = {"alertname": name, "site": site}
            _add(acks, labels, float(times.count[(name, site)]))
            _add(delays, labels, times.seconds.get((name, site), 0.0))
        yield acks[0]
        yield delays[0]
        now = self.collector.clock.now()
        silences = _family(CATALOG["lifeline_silences_active"])
        in_force = [s for s in engine.notifications.registry.silences.values() if s.state(now) == "active"]
        _add(silences, {}, float(len(in_force)))
        yield silences[0]
        notifications = _family(CATALOG["lifeline_notifications_total"])
        for notifier in self.collector.dispatcher.notifiers:
            for result in ("ok", "retry", "failed"):
                value = stats.notifications[(notifier.name, result)]
                _add(notifications, {"notifier": notifier.name, "result": result}, float(value))
        yield notifications[0]


_OWN_AGENT_METRICS = (
    "lifeline_agent_up",
    "lifeline_agent_last_seen_timestamp_seconds",
    "lifeline_agent_clock_offset_seconds",
    "lifeline_agent_sequence_gaps_total",
    "lifeline_agent_sequence_missing_batches",
)


def _add(family: tuple[Metric, str], labels: dict[str, str], value: float) -> None:
    metric, sample_name = family
    metric.add_sample(sample_name, labels, value)


def make_registry(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(collector))
    if collector.remote_writer is not None:
        registry.register(collector.remote_writer.stats)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
