"""Helpers of the alerting tests: positions that report the agent's judgement to a Collector."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector_kit import T0

from lifeline_collector.alerting.alert import AlertGroup
from lifeline_collector.alerting.state import Change
from lifeline_collector.clock import ManualClock
from lifeline_collector.config import CollectorConfig, parse
from lifeline_collector.service import Collector
from lifeline_collector.store import AgentRow
from lifeline_wire import Batch, Envelope, Sample
from lifeline_wire.catalog.health import STATES
from lifeline_wire.layers import LAYERS

MS = int(T0 * 1000)
INF = math.inf


def make_config(tmp_path: Path, **sections: Any) -> CollectorConfig:
    """A config with the store under ``tmp_path``; list values (notifiers, routes) are arrays of tables."""
    # Resolution at once unless a test asks for the resolve hold: tests step the clock by hand.
    data: dict[str, Any] = {
        "store": {"path": str(tmp_path / "collector.db")},
        "alerting": {"resolve_hold": "0s"},
    }
    for name, values in sections.items():
        if isinstance(values, list):
            data[name] = values
        else:
            data.setdefault(name, {}).update(values)
    return parse(data, "(test)")


def judgement(
    ts_ms: int,
    *,
    layers: Mapping[str, str] | None = None,
    verdict: tuple[str, str] = ("none", "healthy"),
    cause: str | None = None,
    risk: float = 0.0,
    ttl: float = INF,
    ready: float | None = 1.0,
    on_backup: float = 0.0,
) -> list[Sample]:
    """What an agent's health model sends every batch: every layer, the verdict, risk, backup.

    ``cause`` is the verdict's cause label; None leaves it out, as an agent older than the field does.
    """
    states = {layer: "ok" for layer in LAYERS}
    states.update(layers or {})
    samples = [
        Sample("lifeline_layer_state", float(STATES[state]), ts_ms, {"layer": layer})
        for layer, state in states.items()
    ]
    said = {"layer": verdict[0], "verdict": verdict[1]} | ({} if cause is None else {"cause": cause})
    samples.append(Sample("lifeline_verdict_info", 1.0, ts_ms, said))
    samples.append(Sample("lifeline_cad_risk_ratio", risk, ts_ms))
    samples.append(Sample("lifeline_cad_time_to_loss_seconds", ttl, ts_ms))
    if ready is not None:
        samples.append(Sample("lifeline_failover_ready", ready, ts_ms))
    samples.append(Sample("lifeline_on_backup", on_backup, ts_ms))
    return samples


def probe_round(
    ts_ms: int, target: str, role: str, *, ok: bool, loss: float | None = None, path: str = "tunnel"
) -> list[Sample]:
    labels = {"target": target, "role": role, "path": path, "kind": "icmp"}
    out = [Sample("lifeline_probe_success", 1.0 if ok else 0.0, ts_ms, labels)]
    out.append(
        Sample("lifeline_probe_loss_ratio", (0.0 if ok else 1.0) if loss is None else loss, ts_ms, labels)
    )
    return out


class Position:
    """One registered agent that reports batches to the collector in-process, on the manual clock."""

    def __init__(
        self, service: Collector, clock: ManualClock, agent_id: str, site: str, position: str
    ) -> None:
        self.service = service
        self.clock = clock
        self.id = agent_id
        service.store.add_agent(agent_id, site=site, position=position, now_ms=MS)
        row = service.store.agent(agent_id)
        assert row is not None
        self.row: AgentRow = row
        self.seq = 0

    @property
    def now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    def report(self, samples: list[Sample], *, priority: bool = False) -> None:
        batch = Batch(
            agent_id=self.id,
            boot_id="b1",
            seq=self.seq,
            created_ms=self.now_ms,
            samples=samples,
            priority=priority,
        )
        self.service.ingest(self.row, Envelope(version=1, batches=[batch], sent_ms=self.now_ms))
        self.seq += 1

    def healthy(self, **extra: Any) -> None:
        self.report(
            judgement(self.now_ms, **extra) + probe_round(self.now_ms, "vpn.agency.example", "vpn", ok=True)
        )

    def vpn_down(self, concentrator: str = "vpn.agency.example") -> None:
        """The tunnel is down while the home internet works (the agent's priority batch)."""
        self.report(
            judgement(
                self.now_ms,
                layers={"vpn": "failed", "agency": "failed", "dns": "failed", "cad": "failed"},
                verdict=("vpn", "VPN tunnel down, internet fine"),
                risk=1.0,
                ttl=0.0,
            )
            + probe_round(self.now_ms, concentrator, "vpn", ok=False),
            priority=True,
        )


@dataclass
class Recorder:
    """What the engine recorded and delivered."""

    changes: list[Change] = field(default_factory=list)
    delivered: list[AlertGroup] = field(default_factory=list)

    def pages(self, name: str | None = None, *, reason: str | None = None) -> list[AlertGroup]:
        return [
            g
            for g in self.delivered
            if (name is None or g.alerts[0].name == name) and (reason is None or g.reason == reason)
        ]

    def summaries(self) -> list[str]:
        return [f"{g.status}: {g.alerts[0].annotations['summary']}" for g in self.delivered if not g.resend]


def collector(tmp_path: Path, clock: ManualClock, **sections: Any) -> Iterator[tuple[Collector, Recorder]]:
    """A Collector on the manual clock whose deliveries and changes are recorded (a generator fixture)."""
    service = Collector(make_config(tmp_path, **sections), clock=clock)
    recorder = Recorder()
    record, deliver = service.engine.record, service.engine.deliver

    def recording(change: Change) -> None:
        recorder.changes.append(change)
        record(change)

    def delivering(group: AlertGroup) -> None:
        recorder.delivered.append(group)
        deliver(group)

    service.engine.record = recording
    service.engine.deliver = delivering
    yield service, recorder
    service.store.close()


def states(service: Collector) -> dict[tuple[str, str], str]:
    """(alertname, agent or site) → state."""
    return {
        (a.name, a.labels.get("agent") or a.labels.get("site", "")): a.state.value
        for a in service.engine.active()
    }
