"""Who is asking: a session cookie, the machine API token, or a trusted SSO proxy; roles; CSRF.

Browsers carry a signed session cookie (HttpOnly, SameSite=Strict, Secure over https); every
state-changing form carries the session's CSRF token, and a POST whose Origin names another site
is refused before that. Machines send ``Authorization: Bearer`` with the API token, which acts as
the ``api-token`` principal with the admin role, or with ``[auth] viewer_token_file``'s token,
which only reads (``read-token``, viewer); neither needs a CSRF token (no cookie, no ambient
authority for a browser to abuse).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from lifeline_collector.http import bearer_token, error_response
from lifeline_collector.people.store import role_rank

if TYPE_CHECKING:
    from lifeline_collector.people.accounts import Accounts

SESSION_COOKIE = "lifeline_session"
TOKEN_PRINCIPAL = "api-token"  # noqa: S105 - a name for the audit trail, not a secret
READ_TOKEN_PRINCIPAL = "read-token"  # noqa: S105 - the same, for [auth] viewer_token_file
Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    via: str  # session | token | sso
    csrf: str = ""

    def can(self, role: str) -> bool:
        return role_rank(self.role) >= role_rank(role)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


def accounts(request: Request) -> Accounts:
    found: Accounts = request.app.state.accounts
    return found


def principal(request: Request) -> Principal | None:
    """The caller, resolved once per request."""
    if "principal" in request.scope.get("state", {}):
        cached: Principal | None = request.state.principal
        return cached
    found = _resolve(request)
    request.state.principal = found
    return found


def _resolve(request: Request) -> Principal | None:
    presented = bearer_token(request.headers.get("authorization"))
    if presented:
        token_hash: str = request.app.state.admin_guard.token_hash
        digest = hashlib.sha256(presented.encode()).hexdigest()
        if token_hash and hmac.compare_digest(digest, token_hash):
            return Principal(TOKEN_PRINCIPAL, "admin", "token")
        viewer_hash = accounts(request).config.viewer_token_hash
        if viewer_hash and hmac.compare_digest(digest, viewer_hash):
            return Principal(READ_TOKEN_PRINCIPAL, "viewer", "token")
        return None
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        resolved = accounts(request).resolve(cookie)
        if resolved is not None:
            user, csrf = resolved
            return Principal(user.name, user.role, "session", csrf)
    return None


def sso_user(request: Request) -> str:
    """The user name a trusted authenticating proxy vouches for, or ""."""
    config = accounts(request).config
    if not config.sso_header or not config.proxy_trusted(client_address(request)):
        return ""
    return request.headers.get(config.sso_header, "").strip()


def wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept.split(",")[0]


def denied(request: Request, role: str) -> Response:
    """401 (not logged in: browsers go to the login page) or 403 (logged in, role too low)."""
    who = principal(request)
    if who is None:
        if wants_html(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={_quote(target)}", status_code=303)
        return error_response(401, "login or API token required", headers={"WWW-Authenticate": "Bearer"})
    return error_response(403, f"needs the {role} role (you are {who.role})")


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")


def require(role: str, handler: Handler) -> Handler:
    """Only callers holding ``role`` (or higher) reach ``handler``."""

    async def guarded(request: Request) -> Response:
        who = principal(request)
        if who is None or not who.can(role):
            return denied(request, role)
        return await handler(request)

    guarded.__name__ = getattr(handler, "__name__", "guarded")
    guarded.__doc__ = handler.__doc__
    return guarded


def require_read(handler: Handler) -> Handler:
    """Reads of positions, alerts and silences: a viewer or above, unless ``[auth] read_access = "open"``."""
    protected = require("viewer", handler)

    async def guarded(request: Request) -> Response:
        if accounts(request).config.read_access == "open":
            return await handler(request)
        return await protected(request)

    guarded.__name__ = getattr(handler, "__name__", "guarded")
    guarded.__doc__ = handler.__doc__
    return guarded


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site (Origin or Referer)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return source != "null"
    parts = urlsplit(source)
    return parts.netloc == request.headers.get("host", "")


def csrf_ok(request: Request, who: Principal, form_token: str) -> bool:
    if who.via == "token":
        return True
    if not same_origin(request):
        return False
    presented = form_token or request.headers.get("x-csrf-token", "")
    return bool(presented) and bool(who.csrf) and hmac.compare_digest(presented, who.csrf)


def cookie_secure(request: Request) -> bool:
    public_url: str = request.app.state.collector.config.server.public_url
    return request.url.scheme == "https" or public_url.startswith("https://")
