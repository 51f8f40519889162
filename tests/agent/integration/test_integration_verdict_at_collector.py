"""The agent's verdicts as the collector sees them: only the current one reads 1.

The agent's recorder, batcher and shipper deliver to the real collector app (in process, over
httpx's ASGI transport), and the position document is read back through the API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from lifeline_agent.config import AgentSection, CollectorEndpoint, CollectorSection
from lifeline_agent.delivery.batcher import Batcher
from lifeline_agent.delivery.shipper import Backoff, Shipper
from lifeline_agent.delivery.spool import MemorySpool
from lifeline_agent.delivery.transport import Response
from lifeline_agent.recorder import Recorder
from lifeline_collector.app import create_app
from lifeline_collector.config import parse
from lifeline_collector.service import Collector

BASE = "http://collector"
VERDICTS = [
    {"layer": "none", "cause": "none", "verdict": "no measurements yet"},
    {"layer": "none", "cause": "none", "verdict": "healthy"},
    {"layer": "internet", "cause": "loss", "verdict": "home internet losing packets"},
]


class AsgiTransport:
    """The shipper's transport over an httpx client bound to the app."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], interface: str = "") -> Response:
        answer = await self.client.post(url, content=body, headers=dict(headers))
        return Response(answer.status_code, answer.headers, answer.content)

    async def get(self, url: str, interface: str = "") -> Response:
        answer = await self.client.get(url)
        return Response(answer.status_code, answer.headers, answer.content)

    async def aclose(self) -> None:
        pass


def test_the_collector_reads_only_the_current_verdict_as_true(tmp_path: Path) -> None:
    config = parse(
        {
            "store": {"path": str(tmp_path / "collector.db")},
            "heartbeat": {"listen": "127.0.0.1:0"},
            "auth": {"read_access": "open"},
        },
        "(test)",
    )
    app = create_app(config, ticker=False)
    service: Collector = app.state.collector
    # The collector's own clock: a sample far ahead of it never becomes a series' latest value.
    now_ms = int(time.time() * 1000)
    token = service.store.add_agent("pos-1", site="north", position="1", now_ms=now_ms)

    async def main() -> list[tuple[dict[str, str], float]]:
        await service.start(ticker=False)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
                recorder, spool = Recorder(), MemorySpool()
                batcher = Batcher("pos-1", "boot-1", recorder, spool)
                shipper = Shipper(
                    AgentSection(id="pos-1", site="north", position="1"),
                    CollectorSection(endpoints=(CollectorEndpoint(BASE),)),
                    spool,
                    token,
                    transport=AsgiTransport(client),
                    backoff=Backoff(initial=0.01, maximum=0.05),
                )
                for step, labels in enumerate(VERDICTS):  # one batch per verdict, a second apart
                    recorder.sample("lifeline_verdict_info", 1, labels, ts_ms=now_ms + 1000 * step)
                    await batcher.flush()
                    while spool.depth():
                        await shipper.ship_pending()
                detail = (await client.get("/positions/pos-1")).json()
        finally:
            await service.stop()
        return [(s["labels"], s["value"]) for s in detail["series"] if s["name"] == "lifeline_verdict_info"]

    verdicts = asyncio.run(main())
    assert [labels["verdict"] for labels, value in verdicts if value == 1] == ["home internet losing packets"]
    assert sorted(labels["verdict"] for labels, value in verdicts if value == 0) == [
        "healthy",
        "no measurements yet",
    ]
