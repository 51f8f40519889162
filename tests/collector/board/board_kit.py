"""Helpers of the board tests: an app with its lifespan (the board's hub runs), agents that report
through the real ingest endpoint, and logged-in clients."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette

from lifeline_collector.people.accounts import Accounts
from lifeline_collector.service import Collector
from lifeline_collector.store import Store
from lifeline_lab.boardfeed import judgement
from lifeline_wire import Batch, Envelope, Sample, encode

PASSWORD = "a long enough password"


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[Collector]:
    """The app as uvicorn runs it: its lifespan started (collector without the tick, board hub)."""
    async with app.router.lifespan_context(app):
        yield app.state.collector


def client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("10.1.2.3", 5000)), base_url="http://collector"
    )


def add_user(app: Starlette, name: str, role: str) -> None:
    accounts: Accounts = app.state.accounts
    accounts.add(name, role, PASSWORD, by="test", address="test")


async def log_in(http: httpx.AsyncClient, name: str, password: str = PASSWORD) -> httpx.Response:
    form = await http.get("/login")
    token = csrf_of(form.text)
    return await http.post("/login", data={"name": name, "password": password, "csrf": token, "next": "/"})


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def rtt(ts_ms: int, seconds: float, path: str = "primary", loss: float = 0.0) -> list[Sample]:
    labels = {"target": "cad", "role": "cad", "path": path, "kind": "tcp"}
    return [
        Sample("lifeline_probe_rtt_seconds", seconds, ts_ms, labels | {"stat": "avg"}),
        Sample("lifeline_probe_loss_ratio", loss, ts_ms, labels),
        Sample("lifeline_probe_success", 1.0 if loss < 1 else 0.0, ts_ms, labels),
    ]


class Agent:
    """A registered agent that reports through ``POST /api/v1/ingest`` like the real one."""

    def __init__(self, service: Collector, agent_id: str, site: str, position: str) -> None:
        self.id, self.site, self.position = agent_id, site, position
        # Through a connection of its own, as ``lifeline-collector agents add`` does.
        registry = Store(service.store.path)
        self.token = registry.add_agent(agent_id, site=site, position=position, now_ms=0)
        registry.close()
        self.seq = 0
        self.service = service

    def now_ms(self) -> int:
        return round(self.service.clock.now() * 1000)

    async def report(self, http: httpx.AsyncClient, samples: list[Sample], *, priority: bool = False) -> None:
        self.seq += 1
        batch = Batch(
            agent_id=self.id,
            boot_id="boot-1",
            seq=self.seq,
            created_ms=self.now_ms(),
            samples=samples,
            priority=priority,
        )
        body = encode(
            Envelope(
                version=1, batches=[batch], sent_ms=self.now_ms(), site=self.site, position=self.position
            )
        )
        answer = await http.post(
            "/api/v1/ingest",
            content=body,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        assert answer.status_code == 200, answer.text

    async def healthy(self, http: httpx.AsyncClient, **kw: Any) -> None:
        await self.report(http, judgement(self.now_ms(), **kw))
