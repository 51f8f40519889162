"""The board's live feed, its colours, single sign-on through a trusted proxy, and housekeeping."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import pytest
from board_kit import Agent, add_user, client, csrf_of, judgement, log_in, running
from collector_kit import Receiver, make_config

from lifeline_collector.app import create_app
from lifeline_collector.board.web import HERE
from lifeline_collector.clock import ManualClock
from lifeline_collector.people.store import PeopleStore

pytestmark = pytest.mark.anyio
HTML = {"Accept": "text/html"}


async def next_message(queue: asyncio.Queue[str]) -> dict[str, object]:
    async with asyncio.timeout(10):  # a guard against a hang, not a measurement
        text = await queue.get()
    data = re.search(r"^data: (.*)$", text, re.MULTILINE)
    assert data is not None
    assert text.startswith("event: rows\n")
    parsed: dict[str, object] = json.loads(data.group(1))
    return parsed


async def test_open_boards_get_only_the_rows_that_changed_rendered_once(
    tmp_path: Path, clock: ManualClock
) -> None:
    app = create_app(make_config(tmp_path), clock=clock, ticker=False)
    async with running(app) as service, client(app) as http:
        hub = app.state.board.hub
        quiet = Agent(service, "pos-1", "north", "1")
        moving = Agent(service, "pos-2", "north", "2")
        await quiet.healthy(http)
        await moving.healthy(http)
        boards = [hub.subscribe() for _ in range(3)]
        clock.advance(1)
        await moving.report(
            http,
            judgement(moving.now_ms(), layers={"vpn": "failed"}, verdict=("vpn", "VPN tunnel down")),
            priority=True,
        )
        messages = [await next_message(board.queue) for board in boards]
        assert messages[0] == messages[1] == messages[2]  # one computation, the same bytes for all
        rows = messages[0]["rows"]
        assert isinstance(rows, list)
        assert [(r["id"], r["state"]) for r in rows] == [("pos-2", "down")]
        assert "VPN tunnel down" in rows[0]["html"]
        assert 'data-state="down"' in rows[0]["html"]
        assert messages[0]["counts"] == {
            "down": 1,
            "silent": 0,
            "at_risk": 0,
            "degraded": 0,
            "no_data": 0,
            "maintenance": 0,
            "ok": 1,
        }
        # Nothing a supervisor sees changed: no message (the next report moves only last_seen).
        clock.advance(1)
        await moving.report(
            http, judgement(moving.now_ms(), layers={"vpn": "failed"}, verdict=("vpn", "VPN tunnel down"))
        )
        await asyncio.sleep(0.3)
        assert all(board.queue.empty() for board in boards)
        # Silence comes from the clock alone: the hub's own pass finds it.
        clock.advance(60)
        message = await next_message(boards[0].queue)
        states = {r["id"]: r["state"] for r in message["rows"]}  # type: ignore[union-attr]
        assert states == {"pos-1": "silent", "pos-2": "silent"}


async def test_a_board_that_cannot_keep_up_is_dropped_not_waited_for(
    tmp_path: Path, clock: ManualClock
) -> None:
    app = create_app(make_config(tmp_path), clock=clock, ticker=False)
    async with running(app) as service, client(app) as http:
        hub = app.state.board.hub
        stuck = hub.subscribe()
        pos = Agent(service, "pos-1", "north", "1")
        for n in range(80):
            clock.advance(1)
            verdict = ("vpn", "VPN tunnel down") if n % 2 else ("none", "healthy")
            layers = {"vpn": "failed"} if n % 2 else {}
            await pos.report(http, judgement(pos.now_ms(), layers=layers, verdict=verdict), priority=True)
            await asyncio.sleep(0.01)
        assert stuck.dropped
        assert stuck not in hub.subscribers


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_every_state_colour_meets_wcag_aa_against_white() -> None:
    css = (HERE / "static" / "board.css").read_text()
    colours = dict(re.findall(r"--c-([a-z_]+):\s*(#[0-9a-fA-F]{6});", css))
    for state in ("down", "silent", "at_risk", "degraded", "no_data", "maintenance", "ok", "text", "muted"):
        ratio = (1.05) / (_luminance(colours[state]) + 0.05)
        assert ratio >= 4.5, f"--c-{state} {colours[state]} on white: {ratio:.2f}:1"
    # Never colour alone: every state has its own icon and its word in the page.
    base = (HERE / "templates" / "base.html").read_text()
    for state in ("down", "silent", "at_risk", "degraded", "no_data", "maintenance", "ok"):
        assert f'id="i-{state}"' in base


async def test_single_sign_on_is_believed_only_from_the_configured_proxy(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = make_config(
        tmp_path,
        auth={"read_access": "viewer", "sso_header": "X-Remote-User", "trusted_proxies": ["10.1.2.3"]},
    )
    app = create_app(config, clock=clock, ticker=False)
    async with running(app) as service:
        stranger = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("10.9.9.9", 5000)), base_url="http://collector"
        )
        async with stranger, client(app) as proxy:
            forged = await stranger.get("/login", headers={"X-Remote-User": "root"})
            assert forged.status_code == 200
            assert "lifeline_session" not in stranger.cookies
            vouched = await proxy.get("/login?next=/", headers={"X-Remote-User": "dana"})
            assert vouched.status_code == 303
            assert "lifeline_session" in proxy.cookies
            board = await proxy.get("/", headers=HTML)
            assert board.status_code == 200
            assert "dana" in board.text
            assert "(viewer)" in board.text
        people = PeopleStore(service.store)
        assert [(r.action, r.detail.get("via")) for r in people.audit_records(actor="dana")] == [
            ("login", "sso"),
            ("user.add", "sso"),
        ]


async def test_housekeeping_keeps_a_year_of_audit_and_ends_stale_sessions(
    tmp_path: Path, clock: ManualClock
) -> None:
    app = create_app(
        make_config(tmp_path, auth={"read_access": "viewer", "session_idle": "10m"}),
        clock=clock,
        ticker=False,
    )
    async with running(app), client(app) as http:
        add_user(app, "ana", "viewer")
        await log_in(http, "ana")
        board = app.state.board
        clock.advance(3600)
        board.prune()
        assert board.people.store._query("SELECT COUNT(*) FROM sessions")[0][0] == 0
        assert board.people.audit_records(action="login")  # the ManualClock's 2023 is not a year before now
        assert (await http.get("/", headers=HTML)).status_code == 303


async def test_a_restarted_collector_shows_its_positions_at_once(tmp_path: Path, clock: ManualClock) -> None:
    config = make_config(tmp_path)
    first = create_app(config, clock=clock, ticker=False)
    async with running(first) as service, client(first) as http:
        pos = Agent(service, "pos-1", "north", "1")
        await pos.report(http, judgement(pos.now_ms(), layers={"vpn": "failed"}, verdict=("vpn", "VPN down")))
    again = create_app(config, clock=clock, ticker=False)  # the board is built from the store
    async with running(again), client(again) as http:
        page = await http.get("/", headers=HTML)
        row = page.text.split('id="row-pos-1"')[1].split("</tr>")[0]
        assert "Down" in row
        assert "VPN down" in row


async def test_an_acknowledgement_reaches_whoever_was_paged(
    tmp_path: Path, clock: ManualClock, receiver: Receiver
) -> None:
    notifiers = [{"kind": "webhook", "name": "pager", "url": receiver.url}]
    app = create_app(make_config(tmp_path, notifiers=notifiers), clock=clock, ticker=False)  # type: ignore[arg-type]
    async with running(app) as service, client(app) as sup:
        add_user(app, "ana", "supervisor")
        pos = Agent(service, "pos-2", "north", "2")
        await pos.report(
            sup, judgement(pos.now_ms(), layers={"vpn": "failed"}, verdict=("vpn", "VPN down")), priority=True
        )
        assert await service.dispatcher.drain(10)
        assert len(receiver.requests) == 1  # the page
        (alert,) = service.engine.active()
        await log_in(sup, "ana")
        token = csrf_of((await sup.get("/positions/pos-2", headers=HTML)).text)
        done = await sup.post(
            "/positions/pos-2/ack",
            data={"csrf": token, "fingerprint": alert.fingerprint, "note": "on it"},
            headers=HTML,
        )
        assert "the people paged are told" in done.text
        assert await service.dispatcher.drain(10)
        told = receiver.bodies()[1]
        assert told["status"] == "firing"
        assert told["alerts"][0]["annotations"]["acknowledged_by"] == "ana"
        assert told["alerts"][0]["annotations"]["ack_comment"] == "on it"
