"""Storing decoded requests: one transaction for many requests (of one group commit), then the
fleet view, the per-agent refusal counters and the hooks after a commit (remote-write).

Nothing reaches the fleet view or a hook unless the transaction committed. Each request sees the
ones before it: two from one agent in one commit chain like two commits. A request that would
take its agent over ``limits.max_series_per_agent`` is refused whole here, where the agent's
series are known.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lifeline_collector.clock import Clock
from lifeline_collector.fleet import AgentView, Fleet, SeriesKey, SeriesState, Slots
from lifeline_collector.ingest.admission import DEFAULT_LIMITS
from lifeline_collector.ingest.dedup import store_batches
from lifeline_collector.ingest.pending import Pending
from lifeline_collector.ingest.plan import plan, plan_columns
from lifeline_collector.ingest.strict import prepare
from lifeline_collector.limits import LimitsSection
from lifeline_collector.self_metrics import Stats
from lifeline_collector.store import AgentRow, SeqTotals, Store
from lifeline_wire.schema import Envelope, IngestResponse, ItemResult

# One logger for the whole ingest path: operators filter on one name.
log = logging.getLogger("lifeline_collector.ingest")


@dataclass(frozen=True, slots=True)
class Stored:
    """What one request added: the agent's updated view and the (boot, seq) of the new batches."""

    agent: AgentView
    new_batches: tuple[tuple[str, int], ...]


class Ingestor:
    def __init__(
        self, store: Store, fleet: Fleet, stats: Stats, clock: Clock, limits: LimitsSection = DEFAULT_LIMITS
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.stats = stats
        self.clock = clock
        self.limits = limits
        # Called after commit with what was stored (remote-write hooks in here).
        self.on_stored: list[Callable[[Stored], None]] = []

    def ingest(self, agent: AgentRow, envelope: Envelope) -> tuple[IngestResponse, Stored]:
        """One strictly decoded request in its own transaction (tests, tools)."""
        return self.commit([prepare(agent, envelope)])[0]

    def commit(self, requests: Sequence[Pending]) -> list[tuple[IngestResponse, Stored]]:
        """Store ``requests`` in one transaction, then update the fleet view; answers in order.

        Each request sees the ones before it (two from one agent in the same commit chain like
        two commits). Nothing reaches the fleet view or the hooks unless the commit succeeded.
        """
        now = self.clock.now()
        now_ms = int(now * 1000)
        horizon = now_ms + round(self.limits.max_clock_ahead * 1000)
        staged: dict[str, dict[SeriesKey, SeriesState]] = {}
        # Agents whose one steady batch in this commit is planned by its shape (``plan_columns``).
        laid_out: dict[str, tuple[Slots, list[SeriesState | None], list[SeriesState | None]]] = {}
        alone = Counter(request.agent.id for request in requests)
        done: list[tuple[Pending, dict[SeriesKey, SeriesState], SeqTotals, list[tuple[str, int]], list[str]]]
        done = []
        with self.store.writer() as writer:
            for request in requests:
                agent = request.agent.id
                refused = self._over_series_limit(request, staged.get(agent, {}))
                if refused:
                    writer.touch_agent(
                        agent,
                        site=request.site,
                        position=request.position,
                        seen_ms=now_ms,
                        clock_offset_ms=request.sent_ms - now_ms,
                    )
                    done.append((request, {}, writer.seq_totals(agent), [], refused))
                    continue
                new = store_batches(writer, request, now_ms)
                updates: dict[SeriesKey, SeriesState] = {}
                columns = request.columns
                laid = None
                if new and columns is not None and alone[agent] == 1:
                    slots = self.fleet.slots(agent, columns.shape.keys)
                    planned = plan_columns(columns, slots.states, horizon)
                    now_states = [
                        state if state is not None else kept
                        for state, kept in zip(planned, slots.states, strict=True)
                    ]
                    # A series never seen whose only points lie beyond the horizon has no state to
                    # lay out: the general path below plans such a batch.
                    if None not in now_states:
                        laid = laid_out[agent] = (slots, planned, now_states)
                        writer.set_agent_latest(agent, slots.others + columns.shape.rows(now_states))
                if new and laid is None:
                    view = self.fleet.agents.get(agent)
                    known = view.series if view is not None else {}
                    mine = staged.setdefault(agent, {})
                    for key, candidate in request.candidates.items():
                        current = mine.get(key)
                        if current is None:
                            current = known.get(key[0], {}).get(key[1])
                        state = plan(candidate, current, horizon)
                        if state is not None:
                            updates[key] = state
                    mine.update(updates)
                writer.touch_agent(
                    agent,
                    site=request.site,
                    position=request.position,
                    seen_ms=now_ms,
                    clock_offset_ms=request.sent_ms - now_ms,
                )
                done.append((request, updates, writer.seq_totals(agent), new, []))
            # Each agent's whole series state, one row per agent (not one per series).
            for agent, mine in staged.items():
                if mine:
                    view = self.fleet.agents.get(agent)
                    states = [
                        (name, key, state.value, state.ts_ms, state.zero_streak)
                        for name, series in (view.series.items() if view is not None else ())
                        for key, state in series.items()
                        if (name, key) not in mine
                    ]
                    states += [
                        (name, key, state.value, state.ts_ms, state.zero_streak)
                        for (name, key), state in mine.items()
                    ]
                    writer.set_agent_latest(agent, states)
        out: list[tuple[IngestResponse, Stored]] = []
        for request, updates, seq, new, refused in done:
            view = self.fleet.apply(
                request.agent,
                updates,
                site=request.site,
                position=request.position,
                seen=now,
                clock_offset=(request.sent_ms - now_ms) / 1000,
                seq=seq,
            )
            if request.agent.id in laid_out:
                self.fleet.set_slots(view, *laid_out[request.agent.id])
            answered = [result for result in request.results if result is not None]
            for code in request.refusals + refused:
                self.stats.reject(request.agent.id, code)
            for result in answered:
                self.stats.batch(result.status)
                if result.status == "rejected":
                    log.warning(
                        "agent %s: batch %s/%d rejected: %s",
                        request.agent.id,
                        result.boot_id,
                        result.seq,
                        result.reason,
                    )
            stored = Stored(view, tuple(new))
            for hook in self.on_stored:
                try:
                    hook(stored)
                except Exception:  # stored and about to be answered: a hook's bug must not undo that
                    log.exception("a hook after the commit of %s failed", request.agent.id)
            out.append((IngestResponse(results=answered, server_ms=now_ms), stored))
        return out

    def _over_series_limit(self, request: Pending, staged: dict[SeriesKey, SeriesState]) -> list[str]:
        """Reject every batch of ``request`` (and say so) if it would take its agent over
        ``limits.max_series_per_agent``; the agent's known series are kept and updated as before."""
        limit = self.limits.max_series_per_agent
        view = self.fleet.agents.get(request.agent.id)
        known = view.series if view is not None else {}
        keys: Sequence[SeriesKey] = (
            request.columns.shape.keys if request.columns is not None else list(request.candidates)
        )
        have = sum(map(len, known.values()))
        if have + len(staged) + len(keys) <= limit:  # the common case: far from the limit
            return []
        added = {key for key in staged if key[1] not in known.get(key[0], {})}
        added.update(key for key in keys if key[1] not in known.get(key[0], {}))
        total = have + len(added)
        if total <= limit:
            return []
        reason = (
            f"$.batches: would make {total} series for agent {request.agent.id}, over"
            f" limits.max_series_per_agent ({limit}); no new series are taken from it"
        )
        for index, row in request.batches:
            request.results[index] = ItemResult(row.boot_id, row.seq, "rejected", reason)
        return ["series_limit"] * len(request.batches)
