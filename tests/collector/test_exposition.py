"""/metrics: promtool-clean exposition with agent/site labels, lifeline_agent_up, stale series dropped."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from collector_kit import T0, cad_round, envelope, make_config, serving
from prometheus_client.parser import text_string_to_metric_families

from lifeline_collector.app import create_app
from lifeline_collector.clock import ManualClock
from lifeline_collector.service import Collector
from lifeline_collector.store import Store
from lifeline_wire import Sample

pytestmark = pytest.mark.anyio

MS = int(T0 * 1000)


def samples_of(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def types_of(text: str) -> dict[str, str]:
    return {family.name: family.type for family in text_string_to_metric_families(text)}


async def report(
    client: httpx.AsyncClient, token: str, agent: str, seq: int, samples: list[Sample], **kw: str
) -> None:
    response = await client.post(
        "/api/v1/ingest",
        content=envelope(agent, (seq, samples), **kw),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200


async def test_exposition_labels_types_up_and_staleness(tmp_path: Path, clock: ManualClock) -> None:
    config = make_config(tmp_path, alerting={"silent_after": "15s"}, exposition={"stale_after": "60s"})
    registry = Store(config.store.path)  # what `lifeline-collector agents add` does
    north = registry.add_agent("pos-12", site="north", position="12", now_ms=MS)
    south = registry.add_agent("pos-40", now_ms=MS)
    registry.close()
    app = create_app(config, clock=clock, ticker=False)
    service: Collector = app.state.collector
    late = Store(config.store.path)
    late.add_agent("pos-77", now_ms=MS)  # registered while serving, never reported
    late.close()
    service.tick()  # the tick follows the registry
    async with serving(app) as client:
        labels = {"target": "cad-primary", "role": "cad", "kind": "tcp"}
        await report(
            client,
            north,
            "pos-12",
            0,
            [
                *cad_round(MS, True, 0),
                Sample("lifeline_probe_packets_sent_total", 42.0, MS, labels),
                Sample("lifeline_probe_rtt_seconds", 0.012, MS, {**labels, "stat": "avg"}),
                Sample("lifeline_verdict_info", 1.0, MS, {"layer": "none", "verdict": "all layers healthy"}),
                Sample("lifeline_cad_time_to_loss_seconds", float("inf"), MS),
            ],
        )
        await report(client, south, "pos-40", 0, cad_round(MS, False, 1), site="south")
        text = (await client.get("/metrics")).text

        promtool = shutil.which("promtool")
        if promtool is not None:
            lint = subprocess.run(
                [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
            )
            assert lint.returncode == 0, lint.stdout + lint.stderr
            assert lint.stdout + lint.stderr == ""

        values = samples_of(text)
        north_cad = {"agent": "pos-12", "site": "north", **labels}
        assert values[("lifeline_probe_success", frozenset(north_cad.items()))] == 1.0
        assert values[("lifeline_probe_packets_sent_total", frozenset(north_cad.items()))] == 42.0
        assert (
            values[("lifeline_probe_rtt_seconds", frozenset({**north_cad, "stat": "avg"}.items()))] == 0.012
        )
        assert values[
            ("lifeline_cad_time_to_loss_seconds", frozenset({"agent": "pos-12", "site": "north"}.items()))
        ] == float("inf")
        south_cad = {"agent": "pos-40", "site": "south", **labels}
        assert values[("lifeline_probe_consecutive_failures", frozenset(south_cad.items()))] == 1.0
        types = types_of(text)
        assert types["lifeline_probe_packets_sent"] == "counter"
        assert types["lifeline_probe_success"] == "gauge"
        assert types["lifeline_agent_sequence_gaps"] == "counter"
        assert "# HELP lifeline_probe_success 1 if the last probe round reached the target, else 0" in text

        def up(agent: str, site: str, text: str) -> float | None:
            return samples_of(text).get(
                ("lifeline_agent_up", frozenset({"agent": agent, "site": site}.items()))
            )

        assert up("pos-12", "north", text) == 1.0
        assert up("pos-77", "", text) == 0.0  # never reported
        assert values[("lifeline_ingest_batches_total", frozenset({("result", "accepted")}))] == 2.0
        assert values[("lifeline_ingest_requests_total", frozenset({("code", "200")}))] == 2.0

        # pos-40 keeps reporting; pos-12 falls silent: up 0 at once, its series kept until stale.
        clock.advance(20)
        await report(client, south, "pos-40", 1, cad_round(MS + 20_000, True, 0), site="south")
        text = (await client.get("/metrics")).text
        assert up("pos-12", "north", text) == 0.0
        assert ("lifeline_probe_success", frozenset(north_cad.items())) in samples_of(text)
        clock.advance(45)  # 65 s silent > stale_after
        await report(client, south, "pos-40", 2, cad_round(MS + 65_000, True, 0), site="south")
        text = (await client.get("/metrics")).text
        assert up("pos-12", "north", text) == 0.0
        assert all(
            labels.get("agent") != "pos-12" or name.startswith("lifeline_agent_")
            for name, labels in ((n, dict(ls)) for n, ls in samples_of(text))
        )
        assert samples_of(text)[("lifeline_probe_success", frozenset(south_cad.items()))] == 1.0
        assert up("pos-40", "south", text) == 1.0
        if promtool is not None:
            lint = subprocess.run(
                [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
            )
            assert lint.returncode == 0, lint.stdout + lint.stderr
