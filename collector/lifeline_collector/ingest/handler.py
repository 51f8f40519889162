"""``POST /api/v1/ingest``: authenticate, bound the body, decode, answer — the HTTP side of ingest.

The body is decoded the fast way (``fast``) and, when that declines, the strict way (``strict``:
the wire's decoder, whose errors name the field); then it waits for its group commit
(``group_commit``), which stores it (``commit``, ``dedup``, ``plan``) before it is answered.

Status codes: 200 with one result per batch (accepted | duplicate | rejected, with a reason that
names the field); 400 a body that is not JSON; 401 missing or wrong token (one generic answer);
403 a batch of another agent; 408 a body not received within ``server.body_timeout``; 413 body
over ``server.max_body_bytes``; 422 JSON that breaks the contract (the field is named); 503 the
store is busy — retry. Nothing an agent sends answers 500: a request that makes the store's code
raise is refused alone (422), the others of its group commit are stored as if it were not there.

What one agent may put into the collector is bounded (``[limits]``): a batch that would take the
agent over ``max_series_per_agent`` series, or whose events break the event limits, is rejected
(per batch, naming the limit). Every refusal is counted per agent and reason on /metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from lifeline_collector.errors import StoreError
from lifeline_collector.http import (
    bearer_token,
    error_response,
    header,
    read_body,
    store_unavailable,
    unauthorized,
)
from lifeline_collector.ingest.admission import DEFAULT_LIMITS
from lifeline_collector.ingest.fast import prepare_fast
from lifeline_collector.ingest.pending import Pending
from lifeline_collector.ingest.strict import prepare
from lifeline_collector.limits import LimitsSection
from lifeline_collector.self_metrics import Stats
from lifeline_collector.store import Store
from lifeline_wire.schema import IngestResponse, WireError, decode_envelope, encode

_SYNTAX_REASONS = ("JSON is malformed", "Input data was truncated")

# One logger for the whole ingest path: operators filter on one name.
log = logging.getLogger("lifeline_collector.ingest")


async def handle(
    request: Request,
    store: Store,
    limit: int,
    commit: Callable[[Pending], Awaitable[IngestResponse]],
    *,
    limits: LimitsSection = DEFAULT_LIMITS,
    stats: Stats | None = None,
    body_timeout: float | None = None,
) -> Response:
    try:
        agent = store.agent_for_token(bearer_token(header(request, b"authorization")))
    except StoreError as exc:
        log.error("ingest: cannot look the token up: %s", exc)
        return store_unavailable()
    if agent is None:
        return unauthorized()
    refused = stats.reject if stats is not None else _not_counted
    try:
        async with asyncio.timeout(body_timeout):
            body = await read_body(request, limit)
    except TimeoutError:
        refused(agent.id, "slow_body")
        return error_response(408, f"body not received within {body_timeout:g} s")
    if body is None:
        refused(agent.id, "too_large")
        return error_response(413, f"body larger than {limit} bytes: split the batches")
    pending = prepare_fast(agent, body, limits)
    if pending is None:  # something is unusual: the strict decoder says what, or takes it
        try:
            envelope = decode_envelope(body)
        except WireError as exc:
            status = 400 if exc.reason.startswith(_SYNTAX_REASONS) else 422
            refused(agent.id, exc.kind)
            return error_response(status, exc.reason, exc.path)
        if envelope.batches[0].agent_id != agent.id:
            refused(agent.id, "wrong_agent")
            return error_response(
                403, "batches belong to another agent than the token's", "$.batches[0].agent_id"
            )
        pending = prepare(agent, envelope, limits)
    try:
        answer = await commit(pending)
    except StoreError as exc:
        log.error("ingest from %s failed: %s", agent.id, exc)
        return store_unavailable()
    except Exception:  # nothing was stored; the others of its group commit were
        log.exception("ingest from %s could not be stored", agent.id)
        refused(agent.id, "unstorable")
        return error_response(422, "the collector could not store this request (its log says why)", "$")
    return Response(encode(answer), media_type="application/json")


def _not_counted(agent: str, reason: str) -> None:
    """Where no stats are kept (tools and tests that call ``handle`` alone)."""
