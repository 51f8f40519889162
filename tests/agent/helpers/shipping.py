"""A shipper over a spool, as the shipper tests set it up, and a way to run it until the spool is empty."""

from __future__ import annotations

import asyncio
import time

from lifeline_agent.config import AgentSection, CollectorEndpoint, CollectorSection
from lifeline_agent.delivery.shipper import Shipper
from lifeline_agent.delivery.spool import SqliteSpool
from lifeline_wire.retry import Backoff

TOKEN = "secret-token-1"


def make_shipper(url: str, spool: SqliteSpool, per_request: int = 50, refused_pause: float = 60.0) -> Shipper:
    return Shipper(
        AgentSection(id="ws-1", site="north", position="12"),
        CollectorSection(
            endpoints=(CollectorEndpoint(url),), timeout=2.0, max_batches_per_request=per_request
        ),
        spool,
        TOKEN,
        backoff=Backoff(initial=0.01, maximum=0.05),
        refused_pause=refused_pause,
    )


def drain(shipper: Shipper, spool: SqliteSpool, limit: float = 20.0) -> None:
    """Run the shipper loop until the spool is empty (the pytest timeout guards the limit)."""

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        deadline = time.monotonic() + limit
        while spool.depth() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        stop.set()
        await task
        await shipper.aclose()

    asyncio.run(main())
