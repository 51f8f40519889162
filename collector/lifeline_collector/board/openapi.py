"""The board's pages in the collector's OpenAPI document, and the read API's new security."""

from __future__ import annotations

from typing import Any

_HTML = {"text/html": {"schema": {"type": "string"}}}
_FORM = "application/x-www-form-urlencoded"
_SESSION: dict[str, list[str]] = {"session": []}
_TOKEN: dict[str, list[str]] = {"adminToken": []}
READ_PATHS = ("/api/v1/alerts", "/api/v1/silences", "/positions/{agent}")


def _page(summary: str, *, params: tuple[str, ...] = (), query: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [
            *({"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params),
            *({"name": q, "in": "query", "required": False, "schema": {"type": "string"}} for q in query),
        ],
        "security": [_SESSION],
        "responses": {
            "200": {"description": summary, "content": _HTML},
            "303": {"description": "Not logged in: to the login page"},
            "403": {"description": "Logged in without the role this needs"},
        },
    }


def _form(summary: str, fields: tuple[str, ...], *, params: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params
        ],
        "security": [_SESSION],
        "requestBody": {
            "required": True,
            "content": {
                _FORM: {
                    "schema": {
                        "type": "object",
                        "properties": {f: {"type": "string"} for f in ("csrf", *fields)},
                        "required": ["csrf"],
                    }
                }
            },
        },
        "responses": {
            "200": {"description": "Done: the position page with a confirmation", "content": _HTML},
            "401": {"description": "Not logged in"},
            "403": {"description": "CSRF token missing or wrong, or the role is too low (recorded)"},
            "422": {"description": "A field is wrong: the page names it", "content": _HTML},
        },
    }


def extend(doc: dict[str, Any]) -> None:
    components = doc.setdefault("components", {})
    components.setdefault("securitySchemes", {})["session"] = {
        "type": "apiKey",
        "in": "cookie",
        "name": "lifeline_session",
        "description": "A browser session from /login (forms also carry its CSRF token)",
    }
    paths = doc.setdefault("paths", {})
    for path in READ_PATHS:
        get = paths.get(path, {}).get("get")
        if get is not None:
            get["security"] = [_TOKEN, _SESSION]
            get.setdefault("responses", {})["401"] = {
                "description": 'No login and no API token (unless [auth] read_access = "open")'
            }
    position = paths.get("/positions/{agent}", {}).get("get")
    if position is not None:
        position["summary"] += " (a browser asking for text/html gets the position page)"
        position["responses"]["200"].setdefault("content", {}).update(_HTML)
    paths["/"] = {"get": _page("The board: every position by site, worst first", query=("site", "state"))}
    paths["/board/events"] = {"get": _page("The board's live feed (server-sent events)")}
    paths["/login"] = {
        "get": {
            "summary": "The login page",
            "responses": {"200": {"description": "Login form", "content": _HTML}},
        },
        "post": {
            "summary": "Log in (sets the session cookie)",
            "requestBody": {
                "content": {
                    _FORM: {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string"},
                                "password": {"type": "string"},
                                "csrf": {"type": "string"},
                                "next": {"type": "string"},
                            },
                        }
                    }
                },
            },
            "responses": {
                "303": {"description": "Logged in: to the page asked for"},
                "400": {"description": "The login form expired"},
                "401": {"description": "Wrong name or password"},
                "429": {"description": "Locked: too many failures for this account from this address"},
            },
        },
    }
    paths["/logout"] = {"post": _form("Log out (ends the session)", ())}
    paths["/positions/{agent}/ack"] = {
        "post": _form("Acknowledge an alert of the position", ("fingerprint", "note"), params=("agent",))
    }
    paths["/positions/{agent}/silence"] = {
        "post": _form("Silence the position or its site", ("scope", "duration", "reason"), params=("agent",))
    }
    paths["/maintenance"] = {
        "post": _form(
            "Schedule a maintenance window", ("agent", "scope", "starts", "ends", "tz_offset", "reason")
        )
    }
    paths["/silences/{silence_id}/expire"] = {
        "post": _form("End a silence or maintenance window now", ("agent",), params=("silence_id",))
    }
    paths["/admin/audit"] = {
        "get": _page(
            "The audit trail (admin)", query=("actor", "action", "target", "outcome", "since", "until")
        )
    }
    paths["/admin/audit.{fmt}"] = {
        "get": _page(
            "The audit trail exported: fmt is csv or json (admin)",
            params=("fmt",),
            query=("actor", "action", "target", "outcome", "since", "until"),
        )
    }
