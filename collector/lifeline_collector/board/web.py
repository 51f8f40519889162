"""The supervisor's screens: login, the live board, a position's page, acting on alerts, the audit trail.

Server-rendered (Jinja2), one small plain script per page, every asset served from this package:
nothing is fetched from elsewhere, so the board works in an air-gapped agency.

Over 500 lines on purpose: every handler here goes through the same login, CSRF and audit steps of
one ``Board``; what needs none of them lives beside it (rows, live, story, install).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from lifeline_collector.alerting import health
from lifeline_collector.alerting.alert import rfc3339
from lifeline_collector.alerting.errors import (
    AlertingError,
    SilenceError,
    UnknownAlertError,
    UnknownSilenceError,
)
from lifeline_collector.alerting.silences import Matcher
from lifeline_collector.board import rows, story
from lifeline_collector.board.announce import announce_ack
from lifeline_collector.board.live import BoardHub
from lifeline_collector.errors import StoreError
from lifeline_collector.http import error_response, read_body
from lifeline_collector.people.accounts import Accounts
from lifeline_collector.people.store import MaintenanceRow, PeopleStore
from lifeline_collector.people.web import (
    SESSION_COOKIE,
    Handler,
    Principal,
    client_address,
    cookie_secure,
    csrf_ok,
    principal,
    require,
    require_read,
    sso_user,
    wants_html,
)
from lifeline_collector.service import Collector
from lifeline_wire.layers import LAYERS
from lifeline_wire.tomlcfg import parse_duration

HERE = Path(__file__).parent
log = logging.getLogger("lifeline_collector.board")
LOGIN_COOKIE = "lifeline_login"  # double-submit CSRF token of the login form (no session yet)
PING_EVERY = 5.0  # seconds between keep-alives on the live stream (the page calls 12 s silent "lost")
RECHECK_SESSION_EVERY = 30.0
MAX_FORM = 16 * 1024
LAYER_WORDS = {"ok": "OK", "degraded": "Degraded", "failed": "Failed", "unknown": "Unknown"}
DURATIONS = {"15m", "1h", "4h", "12h"}
MAX_MAINTENANCE = 31 * 86400.0


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=False,
    )
    env.filters["iso"] = lambda ts: rfc3339(float(ts))
    env.filters["clock"] = lambda ts: datetime.fromtimestamp(float(ts), UTC).strftime("%H:%M:%S UTC")
    env.filters["utc"] = lambda ts: datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S")
    env.filters["ttl"] = lambda row: rows.ttl_text(row.time_to_loss)
    env.filters["backup"] = rows.backup_text
    env.filters["zfill"] = lambda text: str(text).zfill(8)
    return env


class Board:
    """The screens of one collector: templates, the live hub, accounts."""

    def __init__(
        self, service: Collector, people: PeopleStore, accounts: Accounts, grafana_url: str = ""
    ) -> None:
        self.service = service
        self.people = people
        self.accounts = accounts
        self.grafana_url = grafana_url.rstrip("/")
        self.env = _environment()
        self._row = self.env.get_template("_row.html")
        self.hub = BoardHub(service, people, self.render_row)
        self.hub.on_state.append(self._record_states)
        self.hub.hourly.append(self.prune)

    def prune(self) -> None:
        """Audit records past ``[auth] audit_retention`` (never under a year), state changes past the
        store's retention, sessions past their lifetime or idle time."""
        now = self.service.clock.now()
        config = self.accounts.config
        removed = self.people.prune_audit(round((now - config.audit_retention) * 1000))
        self.people.prune_state_changes(round((now - self.service.config.store.retention) * 1000))
        self.people.drop_stale_sessions(
            round((now - config.session_lifetime) * 1000), round((now - config.session_idle) * 1000)
        )
        if removed:
            log.info("pruned %d audit records older than the audit retention", removed)

    def render_row(self, row: rows.Row, since: float | None) -> str:
        return self._row.render(row=row, since=since)

    def _record_states(self, moved: list[tuple[rows.Row, rows.Row | None]]) -> None:
        at_ms = round(self.service.clock.now() * 1000)
        # A healthy position seen at start is no news for its timeline.
        news = [
            (row.agent, at_ms, row.state, row.verdict)
            for row, old in moved
            if old is not None or row.state != "ok"
        ]
        # On a store error the timeline misses these lines; the board itself goes on.
        with contextlib.suppress(StoreError):
            self.people.add_state_changes(news)

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("who", principal(request))
        html = self.env.get_template(template).render(**context)
        response = HTMLResponse(html, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
            " frame-ancestors 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    def audit(self, request: Request, who: Principal | str, action: str, target: str, **kw: Any) -> None:
        self.people.audit(
            at_ms=round(self.service.clock.now() * 1000),
            actor=who if isinstance(who, str) else who.name,
            action=action,
            target=target,
            address=client_address(request),
            **kw,
        )

    # --- login and logout -------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        target = _local(request.query_params.get("next", "/"))
        sso = sso_user(request)
        if sso:
            return self._sso_login(request, sso, target)
        return self._login_page(request, target)

    def _login_page(
        self, request: Request, target: str, *, message: str = "", status: int = 200, name: str = ""
    ) -> Response:
        token = secrets.token_urlsafe(24)
        response = self.page(
            request,
            "login.html",
            status,
            who=None,
            csrf=token,
            next=target,
            message=message,
            error=status >= 400,
            name=name,
        )
        response.set_cookie(
            LOGIN_COOKIE, token, max_age=3600, httponly=True, samesite="strict", secure=cookie_secure(request)
        )
        return response

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        target = _local(form.get("next", "/"))
        name = form.get("name", "").strip()
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        if not cookie or not secrets.compare_digest(cookie, form.get("csrf", "")):
            return self._login_page(
                request,
                target,
                status=400,
                name=name,
                message="The login form expired or came from elsewhere: please try again.",
            )
        result = self.accounts.login(name, form.get("password", ""), client_address(request))
        if result.user is None:
            if result.outcome == "locked":
                minutes = max(1, round(result.retry_after / 60))
                text = f"Too many failed attempts for this account from here: try again in {minutes} min."
                return self._login_page(request, target, message=text, status=429, name=name)
            return self._login_page(
                request,
                target,
                status=401,
                name=name,
                message="Wrong user name or password (or the account is disabled).",
            )
        return self._start(request, result.user.name, target)

    def _start(self, request: Request, name: str, target: str) -> Response:
        user = self.people.user(name)
        assert user is not None
        cookie, _csrf = self.accounts.start_session(user, client_address(request))
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=round(self.accounts.config.session_lifetime),
            httponly=True,
            samesite="strict",
            secure=cookie_secure(request),
        )
        response.delete_cookie(LOGIN_COOKIE)
        return response

    def _sso_login(self, request: Request, name: str, target: str) -> Response:
        user = self.people.user(name)
        if user is not None and not user.active:
            self.audit(request, name, "login", name, outcome="disabled", detail={"via": "sso"})
            return error_response(403, "account disabled")
        if user is None:
            role = self.accounts.config.sso_role
            self.people.add_user(name, role, "!sso", round(self.service.clock.now() * 1000))
            self.audit(request, name, "user.add", name, detail={"role": role, "via": "sso"})
        self.audit(request, name, "login", name, detail={"via": "sso"})
        return self._start(request, name, target)

    async def logout(self, request: Request) -> Response:
        who = principal(request)
        form = await _form(request)
        if who is None or who.via != "session":
            return RedirectResponse("/login", status_code=303)
        if not csrf_ok(request, who, form.get("csrf", "")):
            return error_response(403, "CSRF token missing or wrong", "csrf")
        self.accounts.end_session(request.cookies.get(SESSION_COOKIE, ""))
        self.audit(request, who, "logout", who.name)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    # --- the board --------------------------------------------------------------------------------

    async def board(self, request: Request) -> Response:
        site = request.query_params.get("site", "")
        state = request.query_params.get("state", "")
        if state and state not in rows.STATES:
            return error_response(400, f"state must be one of {', '.join(rows.STATES)}", "state")
        if self.hub.running:
            self.hub.catch_up()
        else:  # served without the app's lifespan (tests): compute everything here
            self.hub.publish(self.hub.refresh_all())
        every = self.hub.snapshot()
        shown = [r for r in every if (not site or r.site == site) and (not state or r.state == state)]
        return self.page(
            request,
            "board.html",
            groups=rows.by_site(shown),
            counts=rows.counts(every if not site else [r for r in every if r.site == site]),
            total=len(every),
            sites=sorted({r.site for r in every}),
            states=rows.STATES,
            words=rows.STATE_WORDS,
            filters={"site": site, "state": state},
            version=self.hub.version,
            render_row=lambda row: Markup(self.hub.html[row.agent]),  # noqa: S704 - rendered by autoescaping Jinja
        )

    async def events(self, request: Request) -> Response:
        """Server-sent events: changed rows as they happen, a ping every few seconds."""
        hub = self.hub
        cookie = request.cookies.get(SESSION_COOKIE, "")
        seen = request.headers.get("last-event-id") or request.query_params.get("v", "")
        subscriber = hub.subscribe()
        loop = asyncio.get_running_loop()

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n\n"
                if seen != str(hub.version):  # the page (or the last stream) missed something
                    yield hub.message(hub.snapshot(), full=True)
                checked = loop.time()
                while not subscriber.dropped:
                    message = f"event: ping\ndata: {hub.version}\n\n"
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(PING_EVERY):
                            message = await subscriber.queue.get()
                    yield message
                    if cookie and loop.time() - checked >= RECHECK_SESSION_EVERY:
                        checked = loop.time()
                        if self.accounts.resolve(cookie) is None:
                            yield "event: logout\ndata: session ended\n\n"
                            return
            finally:
                hub.unsubscribe(subscriber)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # --- a position -------------------------------------------------------------------------------

    def position_page(
        self, request: Request, agent_id: str, *, message: str = "", error: bool = False, status: int = 200
    ) -> Response:
        service = self.service
        view = service.fleet.agents.get(agent_id)
        if view is None:
            return self.page(request, "position_missing.html", 404, agent=agent_id)
        now = service.clock.now()
        maintenance = self.hub.maintenance()
        row = rows.row_of(service, view, now, maintenance)
        judged = health.read_health(view)
        layers = [(layer, judged.state(layer)) for layer in LAYERS if layer in judged.layers]
        alerts = []
        for alert in sorted(service.engine.states.of_scope(agent_id), key=lambda a: a.starts_at):
            ack = service.registry.ack_of(alert.fingerprint, alert.starts_at)
            alerts.append(
                {
                    "fingerprint": alert.fingerprint,
                    "name": alert.name,
                    "severity": alert.severity,
                    "state": alert.state.value,
                    "summary": alert.annotations.get("summary", ""),
                    "starts_at": alert.starts_at,
                    "ack": ack,
                    "muted": bool(service.registry.silenced_by(alert.labels, now)),
                }
            )
        labels = rows.alert_labels(view)
        silences = story.silences_for(service, labels, self.people.maintenance(), now)
        timeline = story.timeline(service, self.people, agent_id, view.site, now)
        for s in silences:
            timeline.append(
                story.Moment(
                    float(str(s["starts_at"])), "silence", f"{s['kind']} by {s['created_by']}: {s['comment']}"
                )
            )
        timeline.sort(key=lambda m: m.at, reverse=True)
        grafana = ""
        if self.grafana_url:
            grafana = f"{self.grafana_url}/d/lifeline-position?{urlencode({'var-agent': agent_id})}"
        return self.page(
            request,
            "position.html",
            status,
            row=row,
            since=self.hub.since.get(agent_id),
            layers=layers,
            layer_words=LAYER_WORDS,
            alerts=alerts,
            silences=silences,
            graphs=story.graphs(service, agent_id, now),
            timeline=timeline[:300],
            grafana=grafana,
            message=message,
            error=error,
        )

    # --- acting -----------------------------------------------------------------------------------

    async def _acting(self, request: Request) -> tuple[Principal, dict[str, str]] | Response:
        """The supervisor acting and the form, or the refusal (audited)."""
        who = principal(request)
        form = await _form(request)
        if who is None:
            return error_response(401, "login required")
        if not csrf_ok(request, who, form.get("csrf", "")):
            self.audit(request, who, "csrf", request.url.path, outcome="denied")
            return error_response(403, "CSRF token missing or wrong (reload the page)", "csrf")
        if not who.can("supervisor"):
            self.audit(
                request,
                who,
                _action_of(request.url.path),
                request.url.path,
                outcome="denied",
                detail={"role": who.role},
            )
            return error_response(403, f"needs the supervisor role (you are {who.role})")
        return who, form

    def _done(self, request: Request, agent_id: str, message: str, *, error: bool = False) -> Response:
        if wants_html(request) or "text/html" in request.headers.get("accept", ""):
            return self.position_page(
                request, agent_id, message=message, error=error, status=422 if error else 200
            )
        return Response(
            json.dumps({"message": message}), 422 if error else 200, media_type="application/json"
        )

    async def acknowledge(self, request: Request) -> Response:
        acting = await self._acting(request)
        if isinstance(acting, Response):
            return acting
        who, form = acting
        agent_id = request.path_params["agent"]
        fingerprint = form.get("fingerprint", "")
        note = form.get("note", "")[:500]
        try:
            alert, ack = self.service.acknowledge(fingerprint, by=who.name, comment=note)
        except UnknownAlertError:
            self.audit(
                request, who, "ack", fingerprint, outcome="failure", detail={"reason": "no such alert"}
            )
            return self._done(request, agent_id, "That alert is no longer open.", error=True)
        self.audit(
            request,
            who,
            "ack",
            f"agent={alert.scope}",
            detail={"alert": alert.name, "fingerprint": fingerprint, "note": note},
        )
        self.hub.notify([alert.scope])
        told = announce_ack(self.service, alert, ack)
        return self._done(
            request,
            agent_id,
            f"{alert.name} acknowledged" + (" (the people paged are told)." if told else "."),
        )

    def _scope_matchers(self, agent_id: str, scope: str) -> tuple[list[Matcher], str]:
        view = self.service.fleet.agents.get(agent_id)
        if view is None:
            raise SilenceError("agent", f"no position {agent_id!r}")
        if scope == "site":
            if not view.site:
                raise SilenceError("scope", "this position has no site")
            return [Matcher.make("site", "=", view.site)], f"site={view.site}"
        if scope != "position":
            raise SilenceError("scope", "must be position or site")
        return [Matcher.make("agent", "=", agent_id)], f"agent={agent_id}"

    async def silence(self, request: Request) -> Response:
        acting = await self._acting(request)
        if isinstance(acting, Response):
            return acting
        who, form = acting
        agent_id = request.path_params["agent"]
        reason = form.get("reason", "").strip()[:500]
        try:
            if form.get("duration") not in DURATIONS:
                raise SilenceError("duration", f"must be one of {', '.join(sorted(DURATIONS))}")
            if not reason:
                raise SilenceError("reason", "say why (it is recorded)")
            matchers, target = self._scope_matchers(agent_id, form.get("scope", "position"))
            silence = self.service.add_silence(
                matchers, created_by=who.name, comment=reason, duration=parse_duration(form["duration"])
            )
        except (SilenceError, AlertingError) as exc:
            return self._done(request, agent_id, f"Not silenced: {exc}", error=True)
        self.audit(
            request,
            who,
            "silence",
            target,
            detail={"id": silence.id, "duration": form["duration"], "reason": reason},
        )
        self.hub.notify_all()
        return self._done(request, agent_id, f"Pages for {target} silenced for {form['duration']}.")

    async def maintenance(self, request: Request) -> Response:
        acting = await self._acting(request)
        if isinstance(acting, Response):
            return acting
        who, form = acting
        agent_id = form.get("agent", "")
        reason = form.get("reason", "").strip()[:500]
        try:
            offset = _int_field(form, "tz_offset", -14 * 60, 14 * 60)
            starts = _local_time(form, "starts", offset)
            ends = _local_time(form, "ends", offset)
            if not reason:
                raise SilenceError("reason", "say why (it is recorded)")
            if ends - starts > MAX_MAINTENANCE:
                raise SilenceError("ends", "a maintenance window lasts at most 31 days")
            scope = form.get("scope", "position")
            matchers, target = self._scope_matchers(agent_id, scope)
            silence = self.service.add_silence(
                matchers,
                created_by=who.name,
                comment=f"maintenance: {reason}",
                starts_at=starts,
                ends_at=ends,
            )
        except (SilenceError, AlertingError) as exc:
            return self._done(request, agent_id, f"Maintenance not scheduled: {exc}", error=True)
        self.people.add_maintenance(MaintenanceRow(silence.id, scope, target.partition("=")[2], reason))
        self.audit(
            request,
            who,
            "maintenance",
            target,
            detail={"id": silence.id, "starts": rfc3339(starts), "ends": rfc3339(ends), "reason": reason},
        )
        self.hub.notify_all()
        return self._done(
            request, agent_id, f"Maintenance for {target} scheduled {rfc3339(starts)} → {rfc3339(ends)}."
        )

    async def expire(self, request: Request) -> Response:
        acting = await self._acting(request)
        if isinstance(acting, Response):
            return acting
        who, form = acting
        silence_id = request.path_params["silence_id"]
        agent_id = form.get("agent", "")
        try:
            self.service.expire_silence(silence_id)
        except UnknownSilenceError:
            return self._done(request, agent_id, "That silence is already over.", error=True)
        self.audit(request, who, "silence.expire", silence_id)
        self.hub.notify_all()
        return self._done(request, agent_id, "Silence ended.")

    # --- audit ------------------------------------------------------------------------------------

    async def audit_page(self, request: Request) -> Response:
        query = request.query_params
        try:
            records, more = self._audit_query(request)
        except ValueError as exc:
            return error_response(400, str(exc))
        fmt = request.path_params.get("fmt", "")
        if fmt == "json":
            return Response(
                json.dumps([r.to_json() for r in records], indent=1),
                media_type="application/json",
                headers={"Content-Disposition": 'attachment; filename="lifeline-audit.json"'},
            )
        if fmt == "csv":
            return Response(
                audit_csv(r.to_json() for r in records),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="lifeline-audit.csv"'},
            )
        keep = {k: v for k, v in query.items() if k in AUDIT_FILTERS and v}
        return self.page(
            request,
            "audit.html",
            records=records,
            more=more,
            f={k: query.get(k, "") for k in AUDIT_FILTERS},
            actions=AUDIT_ACTIONS,
            outcomes=("success", "failure", "locked", "disabled", "denied"),
            query=urlencode(keep),
        )

    def _audit_query(self, request: Request) -> tuple[list[Any], bool]:
        query = request.query_params
        export = "fmt" in request.path_params
        limit = 100_000 if export else 500
        records = self.people.audit_records(
            since_ms=_day_ms(query.get("since", ""), "since"),
            until_ms=_day_ms(query.get("until", ""), "until", end=True),
            actor=query.get("actor", ""),
            action=query.get("action", ""),
            target=query.get("target", ""),
            outcome=query.get("outcome", ""),
            limit=limit + 1,
        )
        return records[:limit], len(records) > limit

    # --- routes -----------------------------------------------------------------------------------

    def routes(self, position_json: Handler) -> list[BaseRoute]:
        async def position(request: Request) -> Response:
            """HTML for browsers, the JSON document for everyone else (alert links land here)."""
            if wants_html(request):
                return await page(request)
            return await position_json(request)

        async def position_html(request: Request) -> Response:
            return self.position_page(request, request.path_params["agent"])

        page = require_read(position_html)

        return [
            Route("/", require_read(self.board), methods=["GET"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/board/events", require_read(self.events), methods=["GET"]),
            Route("/positions/{agent}", position, methods=["GET"]),
            Route("/positions/{agent}/ack", self.acknowledge, methods=["POST"]),
            Route("/positions/{agent}/silence", self.silence, methods=["POST"]),
            Route("/maintenance", self.maintenance, methods=["POST"]),
            Route("/silences/{silence_id}/expire", self.expire, methods=["POST"]),
            Route("/admin/audit", require("admin", self.audit_page), methods=["GET"]),
            Route("/admin/audit.{fmt}", require("admin", self.audit_page), methods=["GET"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]


AUDIT_FILTERS = ("actor", "action", "target", "outcome", "since", "until")
AUDIT_ACTIONS = (
    "login",
    "logout",
    "ack",
    "silence",
    "silence.expire",
    "maintenance",
    "user.add",
    "user.passwd",
    "user.role",
    "user.disable",
    "user.enable",
    "agent.add",
    "agent.revoke",
    "csrf",
)
AUDIT_COLUMNS = ("id", "at", "actor", "action", "target", "address", "outcome", "detail")


def audit_csv(records: Any) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(AUDIT_COLUMNS)
    for record in records:
        row = [record[c] if c != "detail" else json.dumps(record[c], sort_keys=True) for c in AUDIT_COLUMNS]
        # A cell a spreadsheet would run as a formula starts with a quote instead (CSV injection).
        writer.writerow(["'" + v if isinstance(v, str) and v[:1] in ("=", "+", "-", "@") else v for v in row])
    return out.getvalue()


def _action_of(path: str) -> str:
    if path.endswith("/ack"):
        return "ack"
    if path.endswith("/silence"):
        return "silence"
    if path.endswith("/expire"):
        return "silence.expire"
    return "maintenance"


class FormTooLarge(Exception):
    """A form body over ``MAX_FORM`` bytes (no page here sends one)."""


async def _form(request: Request) -> dict[str, str]:
    if request.method != "POST":
        return {}
    body = await read_body(request, MAX_FORM)
    if body is None:
        raise FormTooLarge
    from urllib.parse import parse_qsl

    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _local(target: str) -> str:
    """Only a path on this site (no open redirect to another host)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _int_field(form: dict[str, str], name: str, low: int, high: int) -> int:
    text = form.get(name, "0") or "0"
    try:
        value = int(text)
    except ValueError:
        raise SilenceError(name, f"must be a whole number (got {text!r})") from None
    if not low <= value <= high:
        raise SilenceError(name, f"must be {low}..{high}")
    return value


def _local_time(form: dict[str, str], name: str, offset_minutes: int) -> float:
    """A ``datetime-local`` field (the browser's wall time) with the browser's UTC offset."""
    text = form.get(name, "")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise SilenceError(name, f"must be a date and time such as 2026-05-01T14:00 (got {text!r})") from None
    if when.tzinfo is None:
        # JavaScript's getTimezoneOffset is UTC minus local time, in minutes.
        when = when.replace(tzinfo=UTC) + timedelta(minutes=offset_minutes)
    return when.timestamp()


def _day_ms(text: str, name: str, *, end: bool = False) -> int | None:
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{name} must be a date such as 2026-05-01 (got {text!r})") from None
    if end:
        day += timedelta(days=1)
    return round(day.timestamp() * 1000)


ViewFactory = Callable[[Collector], Board]
