"""The agent's own metrics, read when asked and recorded before a batch is cut."""

from __future__ import annotations

from lifeline_agent.clock import SystemClock
from lifeline_agent.delivery.spool import MemorySpool
from lifeline_agent.probes.runner import ProbeRunner
from lifeline_agent.recorder import Recorder, series_key
from lifeline_agent.self_metrics import SelfMetrics


def test_without_spool_or_shipper_only_the_agent_and_its_providers_are_shown() -> None:
    recorder = Recorder(SystemClock())
    providers = {"wifi": (False, "no radio")}
    metrics = SelfMetrics(recorder, SystemClock(), "7", ProbeRunner(recorder), providers)
    values = metrics.values()
    assert values[series_key("lifeline_provider_available", {"provider": "wifi"})] == 0.0
    assert values[series_key("lifeline_agent_probe_errors_total", {})] == 0.0
    assert not any(name.startswith("lifeline_agent_spool_") for name, _labels in values)
    providers["wifi"] = (True, "")  # the mapping is read at each call, not copied
    assert metrics.values()[series_key("lifeline_provider_available", {"provider": "wifi"})] == 1.0


def test_the_spool_is_shown_once_set_and_recording_puts_every_value_in_the_recorder() -> None:
    recorder = Recorder(SystemClock())
    metrics = SelfMetrics(recorder, SystemClock(), "7", ProbeRunner(recorder), {})
    metrics.spool = MemorySpool()
    values = metrics.values()
    assert values[series_key("lifeline_agent_spool_batches", {})] == 0.0
    metrics.record()
    assert recorder.latest() == values
