"""Putting the board and the people into a collector app: routes, guards, live hooks, audit.

``install`` is called once by ``create_app``. It
- serves the board's pages ahead of the API routes (``/positions/{agent}`` answers HTML to a
  browser and the JSON document to everyone else);
- puts the read API (alerts, silences, positions) behind a viewer login or the API token, unless
  ``[auth] read_access = "open"``;
- records each operator write through the API in the audit trail, as the ``api-token`` principal;
- tells the board's hub about every ingest commit and alert change, and runs the hub for the
  app's lifetime.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lifeline_collector.alerting.state import Change
from lifeline_collector.board import openapi as board_openapi
from lifeline_collector.board.announce import announce_ack
from lifeline_collector.board.settings import BoardConfig
from lifeline_collector.board.web import MAX_FORM, Board, FormTooLarge
from lifeline_collector.errors import StoreError
from lifeline_collector.http import error_response
from lifeline_collector.people.accounts import Accounts
from lifeline_collector.people.settings import AuthConfig
from lifeline_collector.people.store import PeopleStore
from lifeline_collector.people.web import TOKEN_PRINCIPAL, Handler, client_address, require_read
from lifeline_collector.service import Collector

READS = {"/api/v1/alerts", "/api/v1/silences"}
POSITION = "/positions/{agent}"


def install(
    app: Starlette,
    service: Collector,
    auth: AuthConfig | None = None,
    board_config: BoardConfig | None = None,
) -> Board:
    auth = auth or AuthConfig()
    people = PeopleStore(service.store)
    accounts = Accounts(people, auth, service.clock)
    board = Board(service, people, accounts, (board_config or BoardConfig()).grafana_url)
    app.state.accounts = accounts
    app.state.board = board
    board_openapi.extend(app.state.openapi)
    app.add_exception_handler(FormTooLarge, _form_too_large)

    kept: list[BaseRoute] = []
    position_json: Handler | None = None
    for route in app.router.routes:
        if isinstance(route, Route) and route.path == POSITION:
            position_json = require_read(route.endpoint)
            continue
        if isinstance(route, Route) and route.path in READS and route.methods and "GET" in route.methods:
            kept.append(Route(route.path, require_read(route.endpoint), methods=["GET"]))
            continue
        if isinstance(route, Route) and route.path.startswith("/api/v1/") and route.methods:
            action = _api_action(route.path, route.methods)
            if action:
                kept.append(
                    Route(route.path, _audited(board, action, route.endpoint), methods=list(route.methods))
                )
                continue
        kept.append(route)
    if position_json is None:
        raise RuntimeError("the collector app has no /positions/{agent} route to serve the position page on")
    app.router.routes[:] = [*board.routes(position_json), *kept]

    committer = app.state.committer
    after: Callable[[list[Any]], object] = committer.after

    def after_and_tell(stored: list[Any]) -> object:
        result = after(stored)
        board.hub.notify(item.agent.id for item in stored)
        return result

    committer.after = after_and_tell
    record: Callable[[Change], None] = service.engine.record

    def record_and_tell(change: Change) -> None:
        record(change)
        board.hub.notify([change.alert.scope])

    service.engine.record = record_and_tell

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(outer: Starlette) -> AsyncIterator[Any]:
        async with inner(outer) as state:
            board.hub.start()
            try:
                yield state
            finally:
                await board.hub.stop()

    app.router.lifespan_context = lifespan
    return board


async def _form_too_large(request: Request, exc: Exception) -> Response:
    return error_response(413, f"form larger than {MAX_FORM} bytes")


def _announce(board: Board, fingerprint: str) -> None:
    alert = board.service.engine.states.get(fingerprint)
    ack = board.service.registry.acks.get(fingerprint)
    if alert is not None and ack is not None:
        announce_ack(board.service, alert, ack)


def _api_action(path: str, methods: set[str]) -> str:
    if path.endswith("/ack") and "POST" in methods:
        return "ack"
    if path == "/api/v1/silences" and "POST" in methods:
        return "silence"
    if path.startswith("/api/v1/silences/") and "DELETE" in methods:
        return "silence.expire"
    return ""


def _audited(board: Board, action: str, handler: Handler) -> Handler:
    """The API write as before, and a record of it (the token acts; ``by``/``createdBy`` is what it said)."""

    async def audited(request: Request) -> Response:
        response = await handler(request)
        if response.status_code in (401, 429):
            return response  # the admin guard logs refused tokens; nothing was done
        target = request.url.path
        detail: dict[str, object] = {"status": response.status_code}
        try:
            body = json.loads(bytes(response.body))
        except ValueError:
            body = {}
        if isinstance(body, dict):
            labels = body.get("labels") if isinstance(body.get("labels"), dict) else {}
            if action == "ack" and labels:
                target = f"agent={labels.get('agent', '')}"
                detail |= {"alert": labels.get("alertname", ""), "fingerprint": body.get("fingerprint", "")}
                ack = (
                    (body.get("status") or {}).get("acknowledged")
                    if isinstance(body.get("status"), dict)
                    else None
                )
                if isinstance(ack, dict):
                    detail |= {"by": ack.get("by", ""), "note": ack.get("comment", "")}
            if action == "silence" and "id" in body:
                target = str(body.get("matcherText", ""))
                detail |= {
                    "id": body["id"],
                    "by": body.get("createdBy", ""),
                    "reason": body.get("comment", ""),
                }
            if action == "silence.expire" and "id" in body:
                target = str(body["id"])
        # On a store error the write itself stands; the error shows in the collector's log.
        with contextlib.suppress(StoreError):
            board.people.audit(
                at_ms=round(board.service.clock.now() * 1000),
                actor=TOKEN_PRINCIPAL,
                action=action,
                target=target,
                address=client_address(request),
                outcome="success" if response.status_code < 300 else "failure",
                detail=detail,
            )
        if response.status_code < 300:
            board.hub.notify_all()
            if action == "ack" and isinstance(body, dict):
                _announce(board, str(body.get("fingerprint", "")))
        return response

    audited.__name__ = getattr(handler, "__name__", "audited")
    audited.__doc__ = handler.__doc__
    return audited
