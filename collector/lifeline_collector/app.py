"""The collector's ASGI app (Starlette): ``create_app(config)`` is what uvicorn and tests serve."""

from __future__ import annotations

import base64
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from lifeline_collector import exposition, openapi
from lifeline_collector.alerting import api as alerts_api
from lifeline_collector.alerting.alert import rfc3339
from lifeline_collector.board.install import install as install_board
from lifeline_collector.clock import Clock
from lifeline_collector.config import CollectorConfig
from lifeline_collector.errors import StoreError
from lifeline_collector.fleet import AgentView
from lifeline_collector.http import (
    bearer_token,
    error_response,
    header,
    json_response,
    store_unavailable,
    unauthorized,
)
from lifeline_collector.ingest import handler
from lifeline_collector.ingest.commit import Stored
from lifeline_collector.ingest.group_commit import GroupCommit
from lifeline_collector.service import Collector
from lifeline_collector.store import hash_token

log = logging.getLogger("lifeline_collector.app")


def _version() -> str:
    try:
        return version("lifeline")
    except PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        return "0.0.0"


def _service(request: Request) -> Collector:
    service: Collector = request.app.state.collector
    return service


async def ingest_endpoint(request: Request) -> Response:
    service = _service(request)
    committer: GroupCommit = request.app.state.committer
    config = service.config
    response = await handler.handle(
        request,
        service.store,
        config.server.max_body_bytes,
        committer.submit,
        limits=config.limits,
        stats=service.stats,
        body_timeout=config.server.body_timeout,
    )
    service.stats.request(response.status_code)
    return response


async def heartbeat_endpoint(request: Request) -> Response:
    """The calling agent's heartbeat key (its token proves who it is), the UDP port and interval."""
    service = _service(request)
    token = bearer_token(header(request, b"authorization"))
    agent = service.store.agent_for_token(token)
    if agent is None:
        return unauthorized()
    offer = service.heartbeats.offer(agent, hash_token(token))
    if offer is None:
        return error_response(404, "heartbeats are off on this collector")
    body = {
        "key": base64.b64encode(offer.key).decode("ascii"),
        "port": offer.port,
        "interval": offer.interval,
    }
    response = json_response(body)
    response.headers["Cache-Control"] = "no-store"
    return response


async def position_endpoint(request: Request) -> Response:
    service = _service(request)
    agent_id = request.path_params["agent"]
    agent = service.fleet.agents.get(agent_id)
    if agent is None:
        return error_response(404, f"no agent {agent_id!r}")
    asked = _stored_history(service, agent_id, request.query_params)
    if isinstance(asked, Response):
        return asked
    now = service.clock.now()
    silence = None if agent.last_seen is None else now - agent.last_seen
    series = [
        {
            "name": name,
            "labels": state.labels,
            "value": state.value if math.isfinite(state.value) else str(state.value),
            "ts": rfc3339(state.ts_ms / 1000),
        }
        for name in sorted(agent.series)
        for state in agent.series[name].values()
    ]
    return json_response(
        {
            "agent": agent.id,
            "site": agent.site,
            "position": agent.position,
            "name": agent.display_name,
            "up": service.position_silent.policy.up(agent, now),
            "last_seen": None if agent.last_seen is None else rfc3339(agent.last_seen),
            "silent_for_seconds": None if silence is None else round(silence, 3),
            "clock_offset_seconds": agent.clock_offset,
            "sequence": {"gaps_total": agent.seq.jumps, "missing": agent.seq.missing},
            "series": series,
            "alerts": [alerts_api.alert_json(service, a) for a in service.engine.states.of_scope(agent.id)],
            "history": service.alert_store.alert_history(agent.id, limit=20),
            **asked,
        }
    )


SAMPLES_LIMIT = 10_000  # the newest, when more are stored since ``since``
EVENTS_LIMIT = 1_000  # the oldest, when more are stored since ``since``
_MILLISECONDS = re.compile(r"[0-9]{1,16}")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,199}")


def _stored_history(service: Collector, agent_id: str, query: Mapping[str, str]) -> dict[str, Any] | Response:
    """What ``?samples=NAME``, ``?events=TYPE`` and ``?since=UNIX_MS`` ask of one position's stored
    history (the latest series alone cannot say whether a value was ever 0 since a moment, or
    which events arrived), or a 400 naming the parameter."""
    since_text = query.get("since", "0")
    if not _MILLISECONDS.fullmatch(since_text):
        return error_response(400, f"since: must be milliseconds since the epoch (got {since_text[:40]!r})")
    since_ms = int(since_text)
    out: dict[str, Any] = {}
    name = query.get("samples")
    if name is not None:
        if not _METRIC_NAME.fullmatch(name):
            return error_response(400, f"samples: must be a metric name (got {name[:40]!r})")
        rows = service.store.samples_of(agent_id, name, since_ms)[-SAMPLES_LIMIT:]
        out["samples"] = [
            {"labels": json.loads(key), "ts_ms": ts, "value": value if math.isfinite(value) else str(value)}
            for key, ts, value in rows
        ]
    kind = query.get("events")
    if kind is not None:
        if not 0 < len(kind) <= 200:
            return error_response(400, "events: must be an event type of 1 to 200 characters")
        events = service.store.events_of(agent_id, kind, since_ms, EVENTS_LIMIT)
        out["events"] = [{"ts_ms": ts, "attributes": json.loads(attributes)} for ts, attributes in events]
    return out


async def metrics_endpoint(request: Request) -> Response:
    registry = request.app.state.registry
    return Response(exposition.render(registry), media_type=CONTENT_TYPE_LATEST)


async def healthz_endpoint(request: Request) -> Response:
    store = _service(request).store
    if store.ping():  # a committed write, not a read: see Store.ping
        return json_response({"status": "ok"})
    return json_response({"status": f"store unavailable: {store.failing or 'busy'}"}, 503)


async def openapi_endpoint(request: Request) -> Response:
    return json_response(request.app.state.openapi)


async def _store_error(request: Request, exc: Exception) -> Response:
    """Any endpoint whose store fails under it answers 503 with ``Retry-After``, never a 500."""
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return store_unavailable()


INGEST_PATH = "/api/v1/ingest"


class CollectorApp(Starlette):
    """Starlette, with ``POST /api/v1/ingest`` served ahead of its middleware and routing: that
    one route takes thousands of requests a second, and its handler answers every error itself.
    Everything else (and any other method on that path) goes the usual way."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == INGEST_PATH and scope["method"] == "POST":
            scope["app"] = self
            response = await ingest_endpoint(Request(scope, receive, send))
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _latest_views(stored: list[Stored]) -> list[AgentView]:
    """Each agent once (a commit may hold two requests of one agent), in commit order."""
    return list({item.agent.id: item.agent for item in stored}.values())


def create_app(config: CollectorConfig, *, clock: Clock | None = None, ticker: bool = True) -> Starlette:
    """The app for ``config``. ``ticker=False`` leaves the evaluation tick to the caller (tests)."""
    service = Collector(config, clock=clock)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start(ticker=ticker)
        try:
            yield
        finally:
            await service.stop()

    app = CollectorApp(
        routes=[
            Route(INGEST_PATH, ingest_endpoint, methods=["POST"]),
            Route("/api/v1/heartbeat", heartbeat_endpoint, methods=["POST"]),
            Route("/api/v1/alerts", alerts_api.list_alerts, methods=["GET"]),
            Route("/api/v1/alerts/{fingerprint}/ack", alerts_api.acknowledge, methods=["POST"]),
            Route("/api/v1/silences", alerts_api.list_silences, methods=["GET"]),
            Route("/api/v1/silences", alerts_api.create_silence, methods=["POST"]),
            Route("/api/v1/silences/{silence_id}", alerts_api.expire_silence, methods=["DELETE"]),
            Route("/api/v1/openapi.json", openapi_endpoint, methods=["GET"]),
            Route("/positions/{agent}", position_endpoint, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/healthz", healthz_endpoint, methods=["GET"]),
        ],
        lifespan=lifespan,
        exception_handlers={StoreError: _store_error},
    )
    app.state.collector = service
    # Requests that arrive together share one commit; their agents' alerts are judged right after it.
    app.state.committer = GroupCommit(
        service.ingestor, lambda stored: service.evaluate_reported(_latest_views(stored))
    )
    app.state.admin_guard = alerts_api.AdminGuard(
        config.api.admin_token_hash, config.api.lockout_after, config.api.lockout_for
    )
    app.state.registry = exposition.make_registry(service)
    app.state.openapi = openapi.document(_version())
    # The supervisor's screens, logins and the audit trail; reads of position data need a login.
    install_board(app, service, config.auth, config.board)
    return app
