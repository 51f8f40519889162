"""``POST /api/v1/ingest``: authenticate, bound, decode, validate per batch, store once, answer per item.

Status codes: 200 with one result per batch (accepted | duplicate | rejected, with a reason that
names the field); 400 a body that is not JSON; 401 missing or wrong token (one generic answer);
403 a batch of another agent; 413 body over ``server.max_body_bytes``; 422 JSON that breaks the
contract (the field is named); 503 the store is busy — retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from lifeline_collector.clock import Clock
from lifeline_collector.errors import StoreError
from lifeline_collector.fleet import AgentView, Fleet, Point, SeriesKey
from lifeline_collector.stats import Stats
from lifeline_collector.store import AgentRow, Store, labels_key
from lifeline_wire import Batch, Envelope, IngestResponse, ItemResult, WireError, decode_envelope, encode
from lifeline_wire.catalog import CATALOG
from lifeline_wire.catalog import collector as collector_catalog
from lifeline_wire.schema import ItemStatus

log = logging.getLogger("lifeline_collector.ingest")

UNAUTHORIZED_BODY = b'{"error":"invalid or missing token"}'
COLLECTOR_ONLY = frozenset(spec.name for spec in collector_catalog.METRICS)
_SYNTAX_REASONS = ("JSON is malformed", "Input data was truncated")


# What an agent may send: metric name → the labels it may carry (collector-only metrics left out).
_ADMISSIBLE = {name: frozenset(spec.labels) for name, spec in CATALOG.items() if name not in COLLECTOR_ONLY}


def check_batch(index: int, batch: Batch) -> str | None:
    """Why a decoded batch breaks the catalog (unknown metric, undeclared label), or None."""
    admissible = _ADMISSIBLE
    for sample in batch.samples:  # the hot path: one lookup and one subset test per sample
        labels = admissible.get(sample.name)
        if labels is None or not sample.labels.keys() <= labels:
            break
    else:
        return None
    for number, sample in enumerate(batch.samples):  # something is wrong: name the first culprit
        path = f"$.batches[{index}].samples[{number}]"
        spec = CATALOG.get(sample.name)
        if spec is None:
            return f"{path}.name: unknown metric {sample.name!r} (not in the catalog)"
        if sample.name in COLLECTOR_ONLY:
            return f"{path}.name: {sample.name} is exposed by the collector itself; agents may not send it"
        for label in sample.labels:
            if label not in spec.labels:
                allowed = ", ".join(spec.labels) or "none"
                return f"{path}.labels.{label}: not a label of {sample.name} (allowed: {allowed})"
    return None


@dataclass(frozen=True, slots=True)
class Stored:
    """What one request added: the agent's updated view and the batches that were new."""

    agent: AgentView
    new_batches: tuple[Batch, ...]


class Ingestor:
    def __init__(self, store: Store, fleet: Fleet, stats: Stats, clock: Clock) -> None:
        self.store = store
        self.fleet = fleet
        self.stats = stats
        self.clock = clock
        # Called after commit with what was stored (remote-write hooks in here).
        self.on_stored: list[Callable[[Stored], None]] = []

    def ingest(self, agent: AgentRow, envelope: Envelope) -> tuple[IngestResponse, Stored]:
        now = self.clock.now()
        now_ms = int(now * 1000)
        results: list[ItemResult | None] = [None] * len(envelope.batches)
        valid: list[tuple[int, Batch]] = []
        for index, batch in enumerate(envelope.batches):
            reason = check_batch(index, batch)
            if reason is None:
                valid.append((index, batch))
            else:
                results[index] = ItemResult(batch.boot_id, batch.seq, "rejected", reason)
        offset_ms = envelope.sent_ms - now_ms
        with self.store.writer() as writer:
            new: list[tuple[int, Batch]] = []
            for index, batch in valid:
                batch_id = writer.insert_batch(agent.id, batch, now_ms)
                status: ItemStatus = "duplicate" if batch_id is None else "accepted"
                results[index] = ItemResult(batch.boot_id, batch.seq, status)
                if batch_id is not None:
                    new.append((batch_id, batch))
            # One pass over the samples: each series' key and id are worked out once per request.
            rows: list[tuple[int, int, float, int]] = []
            points: dict[SeriesKey, list[Point]] = {}
            series_ids: dict[SeriesKey, int] = {}
            for batch_id, batch in new:
                for sample in batch.samples:
                    key = (sample.name, labels_key(sample.labels))
                    series = series_ids.get(key)
                    if series is None:
                        series = series_ids[key] = writer.series_id(agent.id, key[0], key[1])
                        points[key] = []
                    value = sample.value if isinstance(sample.value, float) else sample.number
                    points[key].append((sample.ts_ms, value, sample.labels))
                    rows.append((series, sample.ts_ms, value, batch_id))
                if batch.events:
                    writer.insert_events(agent.id, batch_id, batch)
            updates = self.fleet.plan_points(agent.id, points)
            writer.insert_samples(rows)
            writer.set_latest(
                [
                    (series_ids[key], state.value, state.ts_ms, state.zero_streak)
                    for key, state in updates.items()
                ]
            )
            writer.touch_agent(
                agent.id,
                site=envelope.site,
                position=envelope.position,
                seen_ms=now_ms,
                clock_offset_ms=offset_ms,
            )
            seq = writer.seq_totals(agent.id)
        view = self.fleet.apply(
            agent,
            updates,
            site=envelope.site,
            position=envelope.position,
            seen=now,
            clock_offset=offset_ms / 1000,
            seq=seq,
        )
        answered = [result for result in results if result is not None]
        for result in answered:
            self.stats.batch(result.status)
            if result.status == "rejected":
                log.warning(
                    "agent %s: batch %s/%d rejected: %s", agent.id, result.boot_id, result.seq, result.reason
                )
        stored = Stored(view, tuple(batch for _, batch in new))
        for hook in self.on_stored:
            hook(stored)
        return IngestResponse(results=answered, server_ms=now_ms), stored


def bearer_token(header: str | None) -> str:
    if not header:
        return ""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


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


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it is known to exceed ``limit`` (declared or counted)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def handle(
    request: Request,
    store: Store,
    limit: int,
    ingest: Callable[[AgentRow, Envelope], IngestResponse],
) -> Response:
    agent = store.agent_for_token(bearer_token(request.headers.get("authorization")))
    if agent is None:
        return unauthorized()
    body = await read_body(request, limit)
    if body is None:
        return error_response(413, f"body larger than {limit} bytes: split the batches")
    try:
        envelope = decode_envelope(body)
    except WireError as exc:
        status = 400 if exc.reason.startswith(_SYNTAX_REASONS) else 422
        return error_response(status, exc.reason, exc.path)
    if envelope.batches[0].agent_id != agent.id:
        return error_response(
            403, "batches belong to another agent than the token's", "$.batches[0].agent_id"
        )
    try:
        answer = ingest(agent, envelope)
    except StoreError as exc:
        log.error("ingest from %s failed: %s", agent.id, exc)
        return error_response(503, "store unavailable, retry later", headers={"Retry-After": "1"})
    return Response(encode(answer), media_type="application/json")
