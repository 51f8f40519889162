"""The runner: metrics per round, state across rounds, and no probe bug ever escapes it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from lifeline_agent.config import Target
from lifeline_agent.probes import REGISTRY, ProbeContext, ProbeResult, ProbeSpec
from lifeline_agent.probes.runner import ProbeRunner, TargetState
from lifeline_agent.recorder import Recorder, series_key


class ScriptedProbe:
    """A probe kind whose rounds return (or raise, or hang) as the test scripts them."""

    def __init__(self, *rounds: ProbeResult | Exception | None) -> None:
        self.rounds = list(rounds)

    async def __call__(self, target: Target, ctx: ProbeContext) -> ProbeResult:
        step = self.rounds.pop(0)
        if isinstance(step, Exception):
            raise step
        if step is None:  # hang past any deadline
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")
        return step


def runner_for(probe: ScriptedProbe) -> tuple[ProbeRunner, Recorder]:
    spec = ProbeSpec("scripted", probe, REGISTRY["tcp"].metrics, "")
    recorder = Recorder()
    return ProbeRunner(recorder, registry={"scripted": spec}), recorder


TARGET = Target(name="cad", role="cad", kind="scripted", host="x", timeout=0.1)
LABELS = {"target": "cad", "role": "cad", "path": "auto", "kind": "scripted"}
OK = ProbeResult(True, rtt_min=0.01, rtt_avg=0.01, rtt_max=0.01, sent=1, received=1, rtts=(0.01,))
OK_SLOW = ProbeResult(True, rtt_min=0.03, rtt_avg=0.03, rtt_max=0.03, sent=1, received=1, rtts=(0.03,))
REFUSED = ProbeResult(False, "refused", sent=1, rtts=(None,))


def latest(recorder: Recorder, name: str, **extra: str) -> float | None:
    return recorder.latest().get(series_key(name, {**LABELS, **extra}))


def test_metrics_counters_and_jitter_across_rounds() -> None:
    runner, recorder = runner_for(ScriptedProbe(OK, OK_SLOW, REFUSED))
    results = [asyncio.run(runner.run_once(TARGET)) for _ in range(3)]
    assert [r.success for r in results] == [True, True, False]
    assert results[1].jitter == pytest.approx(0.02 / 16)  # RFC 3550 across the two rounds
    assert latest(recorder, "lifeline_probe_packets_sent_total") == 3
    assert latest(recorder, "lifeline_probe_packets_received_total") == 2
    assert latest(recorder, "lifeline_probe_consecutive_failures") == 1
    assert latest(recorder, "lifeline_probe_success") == 0
    assert latest(recorder, "lifeline_probe_loss_ratio") == 1.0
    # A failed round drops the stale RTT from /metrics instead of repeating the last good one.
    assert latest(recorder, "lifeline_probe_rtt_seconds", stat="avg") is None
    assert all(r.duration > 0 for r in results)


def test_state_change_emits_an_event_and_calls_hooks() -> None:
    runner, recorder = runner_for(ScriptedProbe(OK, REFUSED, REFUSED, OK))
    seen: list[tuple[bool, int, bool]] = []

    def hook(target: Target, result: ProbeResult, state: TargetState) -> None:
        seen.append((result.success, state.consecutive_failures, state.changed))

    runner.subscribe(hook)
    for _ in range(4):
        asyncio.run(runner.run_once(TARGET))
    assert seen == [(True, 0, False), (False, 1, True), (False, 2, False), (True, 0, True)]
    _samples, events = recorder.drain()
    assert [(e.type, e.attributes["state"], e.attributes["reason"]) for e in events] == [
        ("probe.state_change", "down", "refused"),
        ("probe.state_change", "up", ""),
    ]


def test_a_probe_that_raises_is_a_failed_round(caplog: pytest.LogCaptureFixture) -> None:
    runner, _recorder = runner_for(ScriptedProbe(KeyError("bug"), OK))
    with caplog.at_level(logging.ERROR, logger="lifeline_agent.probes.runner"):
        result = asyncio.run(runner.run_once(TARGET))
    assert (result.success, result.reason) == (False, "error")
    assert runner.probe_errors == 1
    record = next(r for r in caplog.records if r.exc_info)
    assert (record.__dict__["probe"], record.__dict__["target"]) == ("scripted", "cad")
    assert asyncio.run(runner.run_once(TARGET)).success  # and the next round runs normally


def test_a_probe_that_hangs_is_cancelled_at_its_deadline() -> None:
    runner, _recorder = runner_for(ScriptedProbe(None))
    result = asyncio.run(runner.run_once(TARGET))
    assert (result.success, result.reason) == (False, "deadline")


def test_unknown_kind_is_unsupported() -> None:
    runner = ProbeRunner(Recorder(), registry={})
    result = asyncio.run(runner.run_once(TARGET))
    assert (result.success, result.reason) == (False, "unsupported")


def test_reasons_are_a_closed_set() -> None:
    with pytest.raises(ValueError, match="REASONS"):
        ProbeResult(False, "Connection reset by peer")


def test_registry_declares_catalog_metrics() -> None:
    assert set(REGISTRY) == {"icmp", "tcp", "dns"}
    for spec in REGISTRY.values():
        assert "lifeline_probe_success" in spec.metrics
        assert spec.sample_config.startswith("[[targets]]")
