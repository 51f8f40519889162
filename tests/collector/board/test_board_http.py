"""The board's pages over HTTP (in-process ASGI): access, login, CSRF, acting, the audit trail."""

from __future__ import annotations

from pathlib import Path

import pytest
from board_kit import Agent, add_user, client, csrf_of, judgement, log_in, rtt, running
from collector_kit import make_config

from lifeline_collector.app import create_app
from lifeline_collector.clock import ManualClock
from lifeline_collector.people.store import PeopleStore

pytestmark = pytest.mark.anyio
HTML = {"Accept": "text/html"}


def secure_app(tmp_path: Path, clock: ManualClock, **sections: dict[str, object]) -> object:
    """The collector with the default access rule (reads need a viewer)."""
    sections.setdefault("auth", {"read_access": "viewer"})
    return create_app(make_config(tmp_path, **sections), clock=clock, ticker=False)


async def test_logged_out_sees_only_the_login_page(tmp_path: Path, clock: ManualClock) -> None:
    app = secure_app(tmp_path, clock)
    async with running(app) as service, client(app) as http:
        Agent(service, "pos-12", "north", "12")
        board = await http.get("/", headers=HTML)
        assert (board.status_code, board.headers["location"]) == (303, "/login?next=/")
        page = await http.get("/positions/pos-12", headers=HTML)
        assert page.headers["location"] == "/login?next=/positions/pos-12"
        for path in (
            "/api/v1/alerts",
            "/api/v1/silences",
            "/positions/pos-12",
            "/board/events",
            "/admin/audit",
        ):
            answer = await http.get(path)
            assert answer.status_code == 401, path
            assert "pos-12" not in answer.text
        login = await http.get("/login")
        assert login.status_code == 200
        assert "Log in to Lifeline" in login.text
        assert "pos-12" not in login.text
        # What a scraper and a load balancer need stays open, as documented.
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/static/board.js")).status_code == 200


async def test_login_sets_a_strict_http_only_cookie_and_logout_ends_it(
    tmp_path: Path, clock: ManualClock
) -> None:
    app = secure_app(tmp_path, clock)
    async with running(app), client(app) as http:
        add_user(app, "ana", "viewer")
        # A login post without the login form's own token (another site's form) is refused.
        forged = await http.post(
            "/login", data={"name": "ana", "password": "a long enough password", "csrf": "x"}
        )
        assert forged.status_code == 400
        assert "lifeline_session" not in http.cookies
        form = await http.get("/login")
        answer = await http.post(
            "/login",
            data={
                "name": "ana",
                "password": "a long enough password",
                "csrf": csrf_of(form.text),
                "next": "/",
            },
        )
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"]
        assert "lifeline_session=" in cookie
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Secure" not in cookie  # plain http on loopback; https below
        board = await http.get("/", headers=HTML)
        assert board.status_code == 200
        assert "ana" in board.text
        assert (await http.get("/api/v1/alerts")).status_code == 200  # the session reads the API too
        # Logging out needs the session's CSRF token.
        assert (await http.post("/logout", data={"csrf": "wrong"})).status_code == 403
        out = await http.post("/logout", data={"csrf": csrf_of(board.text)})
        assert (out.status_code, out.headers["location"]) == (303, "/login")
        assert (await http.get("/api/v1/alerts")).status_code == 401
        records = [
            (r.actor, r.action, r.outcome, r.address)
            for r in PeopleStore(app.state.collector.store).audit_records()
        ]
        assert ("ana", "logout", "success", "10.1.2.3") in records
        assert ("ana", "login", "success", "10.1.2.3") in records


async def test_cookie_is_secure_when_the_collector_is_served_over_https(
    tmp_path: Path, clock: ManualClock
) -> None:
    app = secure_app(tmp_path, clock, server={"public_url": "https://lifeline.example"})
    async with running(app), client(app) as http:
        add_user(app, "ana", "viewer")
        answer = await log_in(http, "ana")
        assert "Secure" in answer.headers["set-cookie"]


async def test_wrong_passwords_lock_the_account_and_say_so(tmp_path: Path, clock: ManualClock) -> None:
    app = secure_app(tmp_path, clock)
    async with running(app), client(app) as http:
        add_user(app, "ana", "viewer")
        statuses = [(await log_in(http, "ana", f"guess {n} wrong")).status_code for n in range(5)]
        assert statuses == [401, 401, 401, 401, 429]
        locked = await log_in(http, "ana")
        assert locked.status_code == 429
        assert "try again in 10 min" in locked.text


async def test_board_shows_positions_worst_first_with_state_words(tmp_path: Path, clock: ManualClock) -> None:
    app = secure_app(tmp_path, clock)
    async with running(app) as service, client(app) as http:
        add_user(app, "vic", "viewer")
        fine = Agent(service, "pos-1", "north", "1")
        cut = Agent(service, "pos-2", "north", "2")
        shaky = Agent(service, "pos-3", "south", "3")
        Agent(service, "pos-4", "south", "4")  # added, never reported
        service.tick()  # the collector's tick follows the agent registry (tests drive it)
        await fine.healthy(http)
        await cut.report(
            http,
            judgement(cut.now_ms(), layers={"vpn": "failed"}, verdict=("vpn", "VPN tunnel down"), ready=0.0),
            priority=True,
        )
        await shaky.healthy(http, risk=0.6, ttl=240.0)
        await log_in(http, "vic")
        page = (await http.get("/", headers=HTML)).text
        order = [page.index(f'id="row-pos-{n}"') for n in (2, 1, 3, 4)]
        assert order == sorted(order)  # north first: it holds the worst position, which leads it
        row = page[page.index('id="row-pos-2"') :].split("</tr>")[0]
        assert "Down" in row
        assert "VPN tunnel down" in row
        assert "not ready" in row
        assert "PositionLayerFailed" in row
        assert "not acknowledged" in row
        shaky_row = page[page.index('id="row-pos-3"') :].split("</tr>")[0]
        assert "At risk" in shaky_row
        assert "4 min" in shaky_row
        assert "No data" in page[page.index('id="row-pos-4"') :].split("</tr>")[0]
        for state, count in (("down", 1), ("at_risk", 1), ("ok", 1), ("no_data", 1)):
            assert f'data-count="{state}"' in page
            chunk = page[page.index(f'data-count="{state}"') :].split("</a>")[0]
            assert f"<b>{count}</b>" in chunk
        # Filters: by site, by state.
        south = (await http.get("/?site=south", headers=HTML)).text
        assert 'id="row-pos-3"' in south
        assert 'id="row-pos-1"' not in south
        down = (await http.get("/?state=down", headers=HTML)).text
        assert 'id="row-pos-2"' in down
        assert 'id="row-pos-1"' not in down
        assert (await http.get("/?state=purple")).status_code == 400
        huge = await http.post("/positions/pos-2/ack", data={"note": "x" * 20_000})
        assert huge.status_code == 413


async def test_viewer_cannot_act_and_supervisor_acknowledges_silences_and_plans_maintenance(
    tmp_path: Path, clock: ManualClock
) -> None:
    app = secure_app(tmp_path, clock)
    async with running(app) as service, client(app) as viewer, client(app) as sup:
        add_user(app, "vic", "viewer")
        add_user(app, "ana", "supervisor")
        cut = Agent(service, "pos-2", "north", "2")
        await cut.report(
            viewer,
            judgement(cut.now_ms(), layers={"vpn": "failed"}, verdict=("vpn", "VPN tunnel down")),
            priority=True,
        )
        (alert,) = service.engine.active()
        await log_in(viewer, "vic")
        await log_in(sup, "ana")

        viewer_page = (await viewer.get("/positions/pos-2", headers=HTML)).text
        assert "VPN tunnel down" in viewer_page
        assert "Acknowledge</button>" not in viewer_page
        refused = await viewer.post(
            "/positions/pos-2/ack", data={"csrf": csrf_of(viewer_page), "fingerprint": alert.fingerprint}
        )
        assert refused.status_code == 403
        assert "supervisor" in refused.text
        assert service.registry.ack_of(alert.fingerprint, alert.starts_at) is None

        page = (await sup.get("/positions/pos-2", headers=HTML)).text
        token = csrf_of(page)
        # Without the session's CSRF token, or from another site, nothing happens.
        missing = await sup.post("/positions/pos-2/ack", data={"fingerprint": alert.fingerprint})
        assert missing.status_code == 403
        cross = await sup.post(
            "/positions/pos-2/ack",
            data={"csrf": token, "fingerprint": alert.fingerprint},
            headers={"Origin": "https://evil.example"},
        )
        assert cross.status_code == 403
        assert service.registry.ack_of(alert.fingerprint, alert.starts_at) is None

        done = await sup.post(
            "/positions/pos-2/ack",
            data={"csrf": token, "fingerprint": alert.fingerprint, "note": "calling her mobile"},
            headers={**HTML, "Origin": "http://collector"},
        )
        assert done.status_code == 200
        assert "acknowledged" in done.text
        ack = service.registry.ack_of(alert.fingerprint, alert.starts_at)
        assert ack is not None
        assert (ack.by, ack.comment) == ("ana", "calling her mobile")
        board = (await sup.get("/", headers=HTML)).text
        assert "acknowledged by ana" in board

        silenced = await sup.post(
            "/positions/pos-2/silence",
            data={"csrf": token, "scope": "site", "duration": "1h", "reason": "VPN headend swap"},
            headers=HTML,
        )
        assert silenced.status_code == 200
        (silence,) = service.silences()
        assert ([str(m) for m in silence.matchers], silence.created_by) == (["site=north"], "ana")
        bad = await sup.post(
            "/positions/pos-2/silence",
            data={"csrf": token, "scope": "site", "duration": "1y", "reason": "x"},
            headers=HTML,
        )
        assert bad.status_code == 422
        assert "duration" in bad.text

        start = clock.now() + 3600
        planned = await sup.post(
            "/maintenance",
            data={
                "csrf": token,
                "agent": "pos-2",
                "scope": "position",
                "tz_offset": "0",
                "reason": "laptop swap",
                "starts": _local(start),
                "ends": _local(start + 7200),
            },
            headers=HTML,
        )
        assert planned.status_code == 200, planned.text
        assert "Maintenance" in planned.text
        assert "pending" in planned.text

        audit = PeopleStore(service.store).audit_records()
        seen = [(r.actor, r.action, r.target, r.outcome) for r in audit]
        assert ("vic", "ack", "/positions/pos-2/ack", "denied") in seen
        assert ("ana", "ack", "agent=pos-2", "success") in seen
        assert ("ana", "silence", "site=north", "success") in seen
        assert ("ana", "maintenance", "agent=pos-2", "success") in seen


async def test_a_maintenance_window_shows_on_the_board_and_mutes_the_page(
    tmp_path: Path, clock: ManualClock
) -> None:
    app = secure_app(tmp_path, clock)
    async with running(app) as service, client(app) as sup:
        add_user(app, "ana", "supervisor")
        pos = Agent(service, "pos-7", "east", "7")
        await pos.healthy(sup)
        await log_in(sup, "ana")
        token = csrf_of((await sup.get("/positions/pos-7", headers=HTML)).text)
        now = clock.now()
        answer = await sup.post(
            "/maintenance",
            data={
                "csrf": token,
                "agent": "pos-7",
                "scope": "site",
                "tz_offset": "0",
                "reason": "ISP work",
                "starts": _local(now - 60),
                "ends": _local(now + 3600),
            },
            headers=HTML,
        )
        assert answer.status_code == 200, answer.text
        board = (await sup.get("/", headers=HTML)).text
        row = board[board.index('id="row-pos-7"') :].split("</tr>")[0]
        assert "In maintenance" in row
        assert "ISP work" in row
        clock.advance(1)
        await pos.report(
            sup,
            judgement(pos.now_ms(), layers={"vpn": "failed"}, verdict=("vpn", "VPN tunnel down")),
            priority=True,
        )
        (alert,) = service.engine.active()
        assert service.engine.status(alert).muted  # no page; the board still says what is wrong
        row = (await sup.get("/", headers=HTML)).text.split('id="row-pos-7"')[1].split("</tr>")[0]
        assert "Down" in row
        assert "maintenance: ISP work" in row


async def test_position_page_has_graphs_timeline_and_grafana_link(tmp_path: Path, clock: ManualClock) -> None:
    app = secure_app(tmp_path, clock, board={"grafana_url": "https://grafana.example/"})
    async with running(app) as service, client(app) as http:
        add_user(app, "vic", "viewer")
        pos = Agent(service, "pos-9", "west", "9")
        for minute in range(30):
            await pos.report(
                http, rtt(pos.now_ms(), 0.020 + minute / 1000) + rtt(pos.now_ms(), 0.080, "backup")
            )
            clock.advance(60)
        await pos.report(
            http,
            judgement(
                pos.now_ms(), layers={"internet": "failed"}, verdict=("internet", "home internet down")
            ),
            priority=True,
        )
        await log_in(http, "vic")
        page = (await http.get("/positions/pos-9", headers=HTML)).text
        assert page.count("<svg viewBox") >= 2
        assert "Round-trip time per path" in page
        assert ">backup<" in page
        assert "https://grafana.example/d/lifeline-position?var-agent=pos-9" in page
        assert "PositionLayerFailed firing" in page  # the alert, in the timeline
        assert "Down — home internet down" in page  # the board's state change, in the timeline
        # API clients keep the JSON document.
        doc = (await http.get("/positions/pos-9")).json()
        assert doc["agent"] == "pos-9"
        assert doc["alerts"]
        missing = await http.get("/positions/nobody", headers=HTML)
        assert missing.status_code == 404
        assert "No position" in missing.text


async def test_api_token_still_acts_and_is_recorded_as_the_token(tmp_path: Path, clock: ManualClock) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text("machine-token-0123456789")
    app = secure_app(tmp_path, clock, api={"admin_token_file": str(token_file)})
    bearer = {"Authorization": "Bearer machine-token-0123456789"}
    async with running(app) as service, client(app) as http:
        cut = Agent(service, "pos-2", "north", "2")
        await cut.report(
            http,
            judgement(cut.now_ms(), layers={"vpn": "failed"}, verdict=("vpn", "VPN down")),
            priority=True,
        )
        alerts = (await http.get("/api/v1/alerts", headers=bearer)).json()
        acked = await http.post(
            f"/api/v1/alerts/{alerts[0]['fingerprint']}/ack",
            json={"by": "pager-bridge", "comment": "auto"},
            headers=bearer,
        )
        assert acked.status_code == 200
        (record,) = PeopleStore(service.store).audit_records(action="ack")
        assert (record.actor, record.target, record.detail["by"]) == (
            "api-token",
            "agent=pos-2",
            "pager-bridge",
        )


async def test_audit_page_filters_and_exports_for_admins_only(tmp_path: Path, clock: ManualClock) -> None:
    app = secure_app(tmp_path, clock)
    async with running(app), client(app) as admin, client(app) as sup:
        add_user(app, "root", "admin")
        add_user(app, "ana", "supervisor")
        await log_in(sup, "ana")
        await log_in(admin, "root")
        await log_in(admin, "=cmd|' /C calc'!A0", "whatever it is")  # a hostile name, recorded as typed
        assert (await sup.get("/admin/audit")).status_code == 403
        page = await admin.get("/admin/audit?action=login&outcome=success", headers=HTML)
        assert page.status_code == 200
        assert "ana" in page.text
        assert "calc" not in page.text
        exported = (await admin.get("/admin/audit.json?actor=ana")).json()
        assert [(r["actor"], r["action"], r["outcome"]) for r in exported] == [("ana", "login", "success")]
        csv_text = (await admin.get("/admin/audit.csv?outcome=failure")).text
        assert csv_text.splitlines()[0] == "id,at,actor,action,target,address,outcome,detail"
        assert "'=cmd" in csv_text  # never a live formula in a spreadsheet
        assert (await admin.get("/admin/audit?since=yesterday")).status_code == 400


def _local(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M")


async def test_a_read_only_machine_token_reads_and_cannot_act(tmp_path: Path, clock: ManualClock) -> None:
    (tmp_path / "read.token").write_text("display-token-0123456789\n")
    (tmp_path / "admin.token").write_text("machine-token-0123456789")
    app = secure_app(
        tmp_path,
        clock,
        auth={"read_access": "viewer", "viewer_token_file": str(tmp_path / "read.token")},
        api={"admin_token_file": str(tmp_path / "admin.token")},
    )
    reader = {"Authorization": "Bearer display-token-0123456789"}
    async with running(app) as service, client(app) as http:
        cut = Agent(service, "pos-2", "north", "2")
        await cut.report(
            http,
            judgement(cut.now_ms(), layers={"vpn": "failed"}, verdict=("vpn", "VPN down")),
            priority=True,
        )
        alerts = await http.get("/api/v1/alerts", headers=reader)
        assert alerts.status_code == 200
        assert (await http.get("/positions/pos-2", headers=reader)).json()["agent"] == "pos-2"
        ack = await http.post(
            f"/api/v1/alerts/{alerts.json()[0]['fingerprint']}/ack", json={"by": "x"}, headers=reader
        )
        assert ack.status_code == 401
        board_ack = await http.post("/positions/pos-2/ack", data={"fingerprint": "x"}, headers=reader)
        assert board_ack.status_code == 403
        assert (
            await http.get("/api/v1/alerts", headers={"Authorization": "Bearer wrong-token-0123456789"})
        ).status_code == 401
