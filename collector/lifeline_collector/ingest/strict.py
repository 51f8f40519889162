"""The strict path: a request the fast decode would not take, as ``lifeline_wire.decode_envelope``
decoded it (every field validated, an error naming its exact path), checked against the catalog
and the ``[limits]`` batch by batch — a bad batch is rejected alone, the others go on.
"""

from __future__ import annotations

from operator import itemgetter

from lifeline_collector.fleet import STREAK_METRICS, SeriesKey
from lifeline_collector.ingest.admission import DEFAULT_LIMITS, check_batch, limits_problem
from lifeline_collector.ingest.pending import Candidate, Pending
from lifeline_collector.limits import LimitsSection
from lifeline_collector.store import AgentRow, BatchRow, labels_key
from lifeline_wire.schema import Envelope, ItemResult

_by_time = itemgetter(0)


def prepare(agent: AgentRow, envelope: Envelope, limits: LimitsSection = DEFAULT_LIMITS) -> Pending:
    """A strictly decoded request, checked against the catalog and the limits batch by batch."""
    results: list[ItemResult | None] = [None] * len(envelope.batches)
    rows: list[tuple[int, BatchRow]] = []
    points: dict[SeriesKey, list[tuple[int, float, dict[str, str]]]] = {}
    refusals: list[str] = []
    for index, batch in enumerate(envelope.batches):
        reason, code = check_batch(index, batch), "catalog"
        if reason is None:
            code, reason = limits_problem(index, batch.events, limits) or (code, None)
        if reason is not None:
            results[index] = ItemResult(batch.boot_id, batch.seq, "rejected", reason)
            refusals.append(code)
            continue
        rows.append((index, BatchRow.of(batch)))
        for sample in batch.every_sample():
            key = (sample.name, labels_key(sample.labels))
            points.setdefault(key, []).append((sample.ts_ms, sample.number, sample.labels))
    candidates: dict[SeriesKey, Candidate] = {}
    for key, series in points.items():
        series.sort(key=_by_time)  # stable: equal times keep the order sent
        newest = series[-1][0]
        ts_ms, value, labels = next(point for point in series if point[0] == newest)
        timeline = [(t, v) for t, v, _ in series] if value == 0 and key[0] in STREAK_METRICS else None
        candidates[key] = Candidate(labels, ts_ms, value, timeline)
    return Pending(
        agent,
        envelope.site,
        envelope.position,
        envelope.sent_ms,
        results,
        rows,
        candidates,
        refusals=refusals,
    )
