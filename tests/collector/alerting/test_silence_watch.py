"""The deadline heap that finds silent positions without sweeping the fleet."""

from __future__ import annotations

from lifeline_collector.alerting.heard import SilencePolicy, SilenceWatch
from lifeline_collector.fleet import AgentView

T = 1_000.0


def view(agent_id: str, *, seen: float | None = None, beat: float | None = None) -> AgentView:
    agent = AgentView(agent_id)
    agent.last_seen, agent.last_beat = seen, beat
    return agent


def test_each_silence_is_reported_once_and_a_heard_agent_is_pushed_back() -> None:
    agents = {"a": view("a", beat=T), "b": view("b", beat=T)}
    watch = SilenceWatch(SilencePolicy(silent_after=15.0, heartbeat_after=2.5))
    watch.watch_all(agents.values())
    assert watch.due(T + 2.4, agents.get) == []
    agents["b"].last_beat = T + 2.0  # the receiver wrote a newer beat: no call needed
    assert [a.id for a in watch.due(T + 2.5, agents.get)] == ["a"]
    assert watch.due(T + 3.0, agents.get) == []  # reported once, not on every check
    assert [a.id for a in watch.due(T + 4.5, agents.get)] == ["b"]
    agents["a"].last_beat = T + 5.0  # heard again: watched again (the receiver's on_heard)
    watch.watch(agents["a"])
    assert [a.id for a in watch.due(T + 7.5, agents.get)] == ["a"]
    assert len(watch) == 0


def test_a_first_beat_brings_the_fast_threshold_at_once() -> None:
    agent = view("a", seen=T)  # batches only so far: 15 s
    watch = SilenceWatch(SilencePolicy(silent_after=15.0, heartbeat_after=2.5))
    watch.watch(agent)
    agent.last_beat = T + 1.0
    watch.watch(agent)  # the first beat: an earlier deadline goes in
    assert [a.id for a in watch.due(T + 3.5, {"a": agent}.get)] == ["a"]


def test_silence_counts_from_the_start_and_revoked_or_never_heard_agents_are_skipped() -> None:
    started = T + 100.0
    agents = {"old": view("old", seen=T), "new": view("new")}
    watch = SilenceWatch(SilencePolicy(silent_after=15.0, heartbeat_after=2.5, started_at=started))
    watch.watch_all(agents.values())
    assert len(watch) == 1  # never heard: nothing to fall silent from
    assert watch.due(started + 14.9, agents.get) == []
    del agents["old"]  # revoked meanwhile
    assert watch.due(started + 15.0, agents.get) == []


def test_a_signed_off_agent_is_never_due() -> None:
    agent = view("a", seen=T, beat=T)
    agent.signed_off = T
    watch = SilenceWatch(SilencePolicy(silent_after=15.0, heartbeat_after=2.5))
    watch.watch(agent)
    assert watch.due(T + 60.0, {"a": agent}.get) == []
    agent.signed_off, agent.last_beat = None, T + 61.0  # beats again: watched again
    watch.watch(agent)
    assert [a.id for a in watch.due(T + 63.5, {"a": agent}.get)] == ["a"]
