"""HTTP handlers for operators: alerts with their status, silences, acknowledgements.

Reads are open like the rest of the read API. Writes (create or expire a silence, acknowledge)
need ``Authorization: Bearer <admin token>`` (``[api] admin_token_file``, compared by SHA-256 hash
in constant time); without a configured token they are refused. After ``lockout_after`` failed
attempts from one address that address is locked out for ``lockout_for`` (429). The address is
the peer's, or the client's a trusted proxy names (``server.trusted_proxies``): a client cannot
pick one (rotating X-Forwarded-For walks around nothing), and one source's lockout locks no other
— unless they share an address, as everyone behind an untrusted same-host proxy does (the log
says so when a loopback address is locked out).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from lifeline_collector.alerting.alert import Alert
from lifeline_collector.alerting.errors import (
    AlertingError,
    SilenceError,
    UnknownAlertError,
    UnknownSilenceError,
)
from lifeline_collector.alerting.silences import Matcher, matcher_from_json, parse_matcher
from lifeline_collector.http import bearer_token, error_response, json_response, read_body
from lifeline_wire.tomlcfg import parse_duration

if TYPE_CHECKING:
    from lifeline_collector.service import Collector

log = logging.getLogger("lifeline_collector.api")

MAX_BODY = 64 * 1024
MAX_TRACKED = 10_000  # client addresses whose failures are remembered (any client can pick many)
Handler = Callable[[Request], Awaitable[Response]]


def _service(request: Request) -> Collector:
    service: Collector = request.app.state.collector
    return service


class AdminGuard:
    """The admin token check, with a lockout per client address after repeated failures."""

    def __init__(self, token_hash: str, lockout_after: int, lockout_for: float) -> None:
        self.token_hash = token_hash
        self.lockout_after = lockout_after
        self.lockout_for = lockout_for
        self._failures: dict[str, list[float]] = {}

    def check(self, request: Request, now: float) -> Response | None:
        """None when the request carries the admin token; else the 401 or 429 to answer."""
        client = request.client.host if request.client else "?"
        recent = [t for t in self._failures.get(client, []) if now - t < self.lockout_for]
        if len(recent) >= self.lockout_after:
            wait = max(1, round(recent[-self.lockout_after] + self.lockout_for - now))
            return error_response(
                429, "too many failed attempts: locked out", headers={"Retry-After": str(wait)}
            )
        presented = bearer_token(request.headers.get("authorization"))
        if self.token_hash and presented:
            digest = hashlib.sha256(presented.encode()).hexdigest()
            if hmac.compare_digest(digest, self.token_hash):
                self._failures.pop(client, None)
                return None
        recent.append(now)
        if client not in self._failures and len(self._failures) >= MAX_TRACKED:
            self._forget(now)
        self._failures[client] = recent
        log.warning("admin request from %s refused (%d failed in a row)", client, len(recent))
        if len(recent) == self.lockout_after:
            log.warning(
                "admin requests from %s locked out for %g s%s",
                client,
                self.lockout_for,
                " (a loopback address: if a reverse proxy on this host forwards operators, list it in"
                " server.trusted_proxies so only the offending client is locked out)"
                if _is_loopback(client)
                else "",
            )
        return error_response(
            401, "admin token required", headers={"WWW-Authenticate": 'Bearer realm="lifeline-admin"'}
        )

    def _forget(self, now: float) -> None:
        """Make room: drop addresses whose failures have expired, else the oldest half."""
        for client in [c for c, times in self._failures.items() if now - times[-1] >= self.lockout_for]:
            del self._failures[client]
        if len(self._failures) >= MAX_TRACKED:
            for client in list(self._failures)[: MAX_TRACKED // 2]:
                del self._failures[client]


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def admin(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        guard: AdminGuard = request.app.state.admin_guard
        refused = guard.check(request, _service(request).clock.now())
        if refused is not None:
            return refused
        return await handler(request)

    return guarded


async def _json_body(request: Request) -> dict[str, Any] | Response:
    body = await read_body(request, MAX_BODY)
    if body is None:
        return error_response(413, f"body larger than {MAX_BODY} bytes")
    if not body.strip():
        return {}
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        return error_response(400, f"not JSON: {exc}", "$")
    except RecursionError:  # arrays in arrays, deeper than the decoder goes: not a request body
        return error_response(400, "JSON nested too deeply", "$")
    if not isinstance(data, dict):
        return error_response(422, "must be a JSON object", "$")
    return data


def alert_json(service: Collector, alert: Alert) -> dict[str, object]:
    body = alert.to_json()
    body["status"] = service.engine.status(alert).to_json()
    return body


async def list_alerts(request: Request) -> Response:
    """``GET /api/v1/alerts[?site=north][&state=firing]``."""
    service = _service(request)
    site, state = request.query_params.get("site"), request.query_params.get("state")
    alerts = [
        alert_json(service, alert)
        for alert in service.engine.active()
        if (site is None or alert.labels.get("site", "") == site)
        and (state is None or alert.state.value == state)
    ]
    return json_response(alerts)


def _time(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SilenceError(key, "must be an RFC 3339 time such as 2024-05-01T12:00:00Z")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise SilenceError(
            key, f"must be an RFC 3339 time such as 2024-05-01T12:00:00Z (got {value!r})"
        ) from None
    if when.tzinfo is None:
        raise SilenceError(key, "must carry a time zone (Z or +hh:mm)")
    return when.timestamp()


def _text(data: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise SilenceError(key, "must be a string")
    if required and not value.strip():
        raise SilenceError(key, "is required")
    return value


def _matchers(data: dict[str, Any]) -> list[Matcher]:
    raw = data.get("matchers")
    if not isinstance(raw, list) or not raw:
        raise SilenceError(
            "matchers", 'must be a non-empty list of {"name", "value", "isRegex", "isEqual"} or "name=value"'
        )
    out: list[Matcher] = []
    for index, item in enumerate(raw):
        where = f"matchers[{index}]"
        if isinstance(item, str):
            try:
                out.append(parse_matcher(item))
            except AlertingError as exc:
                raise SilenceError(where, str(exc)) from None
        else:
            out.append(matcher_from_json(item, where))
    return out


@admin
async def create_silence(request: Request) -> Response:
    """``POST /api/v1/silences``: matchers, startsAt (default now), endsAt or duration, createdBy, comment."""
    service = _service(request)
    data = await _json_body(request)
    if isinstance(data, Response):
        return data
    try:
        unknown = sorted(set(data) - {"matchers", "startsAt", "endsAt", "duration", "createdBy", "comment"})
        if unknown:
            raise SilenceError(unknown[0], "unknown field")
        duration = None
        if data.get("duration") is not None:
            try:
                duration = parse_duration(data["duration"])
            except ValueError as exc:
                raise SilenceError("duration", str(exc)) from None
        silence = service.add_silence(
            _matchers(data),
            created_by=_text(data, "createdBy", required=True),
            comment=_text(data, "comment"),
            starts_at=_time(data, "startsAt"),
            ends_at=_time(data, "endsAt"),
            duration=duration,
        )
    except SilenceError as exc:
        return error_response(422, exc.reason, f"$.{exc.field}")
    return json_response(silence.to_json(service.clock.now()), 201)


async def list_silences(request: Request) -> Response:
    """``GET /api/v1/silences[?all=true]``: active and pending ones (``all``: expired too)."""
    service = _service(request)
    include_expired = request.query_params.get("all", "").lower() in ("1", "true", "yes")
    now = service.clock.now()
    return json_response([s.to_json(now) for s in service.silences(include_expired=include_expired)])


@admin
async def expire_silence(request: Request) -> Response:
    """``DELETE /api/v1/silences/{id}``: the silence ends now (kept, listed as expired)."""
    service = _service(request)
    silence_id = request.path_params["silence_id"]
    try:
        service.expire_silence(silence_id)
    except UnknownSilenceError:
        return error_response(404, f"no active or pending silence {silence_id!r}")
    return json_response({"id": silence_id, "status": {"state": "expired"}})


@admin
async def acknowledge(request: Request) -> Response:
    """``POST /api/v1/alerts/{fingerprint}/ack`` with ``{"by": NAME, "comment": …}``."""
    service = _service(request)
    fingerprint = request.path_params["fingerprint"]
    data = await _json_body(request)
    if isinstance(data, Response):
        return data
    try:
        alert, _ack = service.acknowledge(
            fingerprint, by=_text(data, "by", required=True), comment=_text(data, "comment")
        )
    except SilenceError as exc:
        return error_response(422, exc.reason, f"$.{exc.field}")
    except UnknownAlertError:
        return error_response(404, f"no active alert with fingerprint {fingerprint!r}")
    return json_response(alert_json(service, alert))
