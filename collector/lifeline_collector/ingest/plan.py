"""What a stored request changes in each series' latest state: only a sample newer than the one
known moves it (backfill is stored and moves nothing), nor does one timed beyond the collector's
clock horizon; the streak of zeros counts rounds in time order.

Which batches are new at all (a replay moves nothing) is decided before, in ``dedup``.
"""

from __future__ import annotations

from itertools import compress, repeat
from operator import and_, eq, ge, gt, itemgetter, not_, or_

from lifeline_collector.fleet import SeriesState
from lifeline_collector.ingest.pending import Candidate, Columns

_by_time = itemgetter(0)
NEVER = -1  # older than any timestamp: a series not seen yet


def plan(candidate: Candidate, current: SeriesState | None, horizon: int | None = None) -> SeriesState | None:
    """The series' new state, or None if the request moves nothing (backfill is stored, but only
    newer samples move "latest"; they apply in time order so the zero streak counts rounds).

    A sample timed after ``horizon`` (the collector's clock plus ``limits.max_clock_ahead``) is
    stored but moves nothing: "latest" follows the agent's timestamps, and one from a clock that
    jumped ahead would otherwise stay newest — every later report mere backfill, the position's
    alerting frozen — until real time caught up with it."""
    if horizon is not None and candidate.ts_ms > horizon:
        return None
    if current is not None and candidate.ts_ms <= current.ts_ms:
        return None
    if candidate.points is None:  # the newest value is not 0: no streak to count
        labels = dict(candidate.labels) if current is None else current.labels
        return SeriesState(labels, candidate.value, candidate.ts_ms, 0)
    # The points end at the candidate (the newest, 0), so only the streak needs the walk (a few
    # points a series: a plain loop is cheaper here than C calls with their set-up).
    points = iter(candidate.points)
    if current is None:  # the first point starts the series
        ts_ms, first = next(points)
        labels, streak = dict(candidate.labels), 1 if first == 0 else 0
    else:
        labels, ts_ms, streak = current.labels, current.ts_ms, current.zero_streak
    for at, number in points:
        if at > ts_ms:
            streak = streak + 1 if number == 0 else 0  # "NaN" and "+Inf" are not 0
            ts_ms = at
    return SeriesState(labels, candidate.value, candidate.ts_ms, streak)


def plan_columns(
    columns: Columns, current: list[SeriesState | None], horizon: int | None = None
) -> list[SeriesState | None]:
    """``plan`` for every series of a steady batch at once (``current`` laid out by its shape): a
    series newer than known takes its newest value; only a series older than known (backfill) or
    whose streak of zeros counts goes through ``plan`` on its own. A series whose newest point lies
    beyond ``horizon`` does not move (see ``plan``)."""
    shape = columns.shape
    states: list[SeriesState | None] = list(
        map(SeriesState, shape.labels, columns.values, columns.ts, repeat(0))
    )
    known = [NEVER if state is None else state.ts_ms for state in current]
    newer = list(map(gt, columns.ts, known))
    if horizon is not None and columns.ts and max(columns.ts) > horizon:
        newer = list(map(and_, newer, map(ge, repeat(horizon), columns.ts)))
    walks = map(and_, shape.streaks, map(eq, columns.values, repeat(0)))
    for at in compress(range(len(states)), map(or_, map(not_, newer), walks)):
        if not newer[at]:
            states[at] = None  # backfill is stored, but does not move "latest"
        else:
            timeline = sorted(columns.points[at], key=_by_time)
            candidate = Candidate(shape.labels[at], columns.ts[at], columns.values[at], timeline)
            states[at] = plan(candidate, current[at], horizon)
    return states
