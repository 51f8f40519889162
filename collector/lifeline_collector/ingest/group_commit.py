"""The group commit: the requests that reach the collector in one event-loop pass share one
transaction (one disk sync for all of them), and each is answered only after it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from lifeline_collector.ingest.commit import Ingestor, Stored
from lifeline_collector.ingest.pending import Pending
from lifeline_wire.schema import IngestResponse

# One logger for the whole ingest path: operators filter on one name.
log = logging.getLogger("lifeline_collector.ingest")


class GroupCommit:
    """Commits the requests that reach it in one event-loop pass in one transaction.

    A request waits for the commit that holds it, so no answer acknowledges unstored data;
    ``after`` (alert evaluation) runs right after each commit, before the answers go out.
    """

    def __init__(self, ingestor: Ingestor, after: Callable[[list[Stored]], object]) -> None:
        self.ingestor = ingestor
        self.after = after
        self._waiting: list[tuple[Pending, asyncio.Future[IngestResponse]]] = []
        self.commits = 0  # commits made, and requests in them: the mean group size
        self.requests = 0

    async def submit(self, request: Pending) -> IngestResponse:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[IngestResponse] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append((request, answer))
        return await answer

    def _flush(self) -> None:
        group, self._waiting = self._waiting, []
        try:
            outcomes = self._commit([request for request, _ in group])
            try:
                self.after([outcome[1] for outcome in outcomes if not isinstance(outcome, Exception)])
            except Exception:  # the data is committed: answer it; the engine isolates its own faults
                log.exception("alert evaluation after a commit failed")
            for (_, answer), outcome in zip(group, outcomes, strict=True):
                if answer.done():
                    continue
                if isinstance(outcome, Exception):
                    answer.set_exception(outcome)
                else:
                    answer.set_result(outcome[0])
        finally:  # a bug must not leave requests waiting for ever
            for _, answer in group:
                if not answer.done():
                    answer.cancel()

    def _commit(self, requests: list[Pending]) -> list[tuple[IngestResponse, Stored] | Exception]:
        """The group in one transaction; if that fails, each request in its own, so one agent's
        request that cannot be stored fails alone and the others are stored as if it were not there."""
        try:
            outcomes: list[tuple[IngestResponse, Stored] | Exception] = list(self.ingestor.commit(requests))
        except Exception as exc:  # the transaction rolled back: nothing of the group is stored
            if len(requests) == 1:
                return [exc]
            log.warning(
                "a group commit of %d requests failed (%s): storing them one by one", len(requests), exc
            )
        else:
            self.commits += 1
            self.requests += len(requests)
            return outcomes
        outcomes = []
        for request in requests:
            try:
                outcomes.append(self.ingestor.commit([request])[0])
            except Exception as exc:  # this request alone: answered with its error
                outcomes.append(exc)
            else:
                self.commits += 1
                self.requests += 1
        return outcomes
