"""The agent's own /metrics: the latest value of every series it produced, plus itself.

A custom collector over the Recorder on its own CollectorRegistry (never the global one), so the
page shows exactly the catalog series, typed as the catalog declares them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lifeline_agent.recorder import Recorder, SeriesKey
from lifeline_wire.catalog import CATALOG, MetricSpec

LiveValues = Callable[[], Mapping[SeriesKey, float]]


def _family(spec: MetricSpec, labels: list[str]) -> GaugeMetricFamily | CounterMetricFamily:
    if spec.type == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=labels)
    # "info" is a gauge whose value is 1 and whose labels carry the facts.
    return GaugeMetricFamily(spec.name, spec.help, labels=labels)


class RecorderCollector:
    """Yields one family per catalog metric that has at least one series."""

    def __init__(self, recorder: Recorder, live: LiveValues | None = None) -> None:
        self.recorder = recorder
        self.live = live

    def collect(self) -> Iterator[Metric]:
        values = self.recorder.latest()
        if self.live is not None:
            values.update(self.live())
        by_name: dict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = {}
        for (name, labels), value in values.items():
            by_name.setdefault(name, []).append((labels, value))
        for name in sorted(by_name):
            spec = CATALOG[name]
            label_names = sorted(spec.labels)
            family = _family(spec, label_names)
            for labels, value in sorted(by_name[name]):
                as_dict = dict(labels)
                family.add_metric([as_dict[k] for k in label_names], value)
            yield family

    def describe(self) -> Iterable[Metric]:
        return []


def registry_for(recorder: Recorder, live: LiveValues | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RecorderCollector(recorder, live))
    return registry


class MetricsServer:
    """``/metrics`` on ``listen`` ("127.0.0.1:9464") in a daemon thread; ``close()`` stops it."""

    def __init__(self, listen: str, registry: CollectorRegistry) -> None:
        host, _, port = listen.rpartition(":")
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(int(port), host.strip("[]") or "127.0.0.1", registry)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
