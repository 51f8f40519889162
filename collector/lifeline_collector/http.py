"""What every HTTP endpoint of the collector shares: reading a request (a header, the bearer token,
a body with a size bound) and answering in JSON (a body, an error naming its field, the 401).

How the server itself runs (trusted proxies, the deadline on request headers) is
``http_server``; this module is only what a Starlette handler calls.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

UNAUTHORIZED_BODY = b'{"error":"invalid or missing token"}'


def json_response(body: Any, status: int = 200) -> Response:
    # msgspec writes non-finite floats as null, which keeps the body valid JSON.
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json")


def error_response(
    status: int, error: str, field: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    body: dict[str, str] = {"error": error}
    if field is not None:
        body["field"] = field
    return Response(
        msgspec.json.encode(body), status_code=status, media_type="application/json", headers=headers
    )


def unauthorized() -> Response:
    return Response(
        UNAUTHORIZED_BODY,
        status_code=401,
        media_type="application/json",
        headers={"WWW-Authenticate": 'Bearer realm="lifeline"'},
    )


def store_unavailable() -> Response:
    """503 with ``Retry-After``: the store cannot be reached or cannot write (PostgreSQL
    restarting, a disk full). An agent keeps its spool and retries, a load balancer may try
    another collector; what failed inside is in the log, not in the answer."""
    return error_response(503, "store unavailable, retry later", headers={"Retry-After": "1"})


def bearer_token(header: str | None) -> str:
    if not header:
        return ""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def header(request: Request, name: bytes) -> str:
    """One request header (``name`` in lower case, as ASGI servers give them), or "": a scan of the
    raw list, cheaper than building Starlette's ``Headers`` on the ingest path."""
    for key, value in request.scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it is known to exceed ``limit`` (declared or counted)."""
    declared = header(request, b"content-length")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:  # "²" is a digit too
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
