"""Where a batch is deduplicated: on (agent, boot_id, seq), the identity an agent gives each batch
it cuts (its boot and a sequence number that only grows within that boot).

The agent resends a batch whose answer it did not get, so a batch may arrive any number of times;
it is stored once. The key is the ``batches`` table's UNIQUE(agent, boot_id, seq), which the
store's writer inserts against inside the commit's transaction, so two copies in one group commit
or in two collectors sharing one database are still one batch.
"""

from __future__ import annotations

from lifeline_collector.ingest.pending import Pending
from lifeline_collector.store import Writer
from lifeline_wire.schema import ItemResult, ItemStatus


def store_batches(writer: Writer, request: Pending, received_ms: int) -> list[tuple[str, int]]:
    """Insert the valid batches of ``request`` and answer each: "accepted" when new, "duplicate"
    when its (agent, boot, seq) is stored already — the agent resent it after a lost answer, so it
    is acknowledged again, stored once and moves nothing. Returns the (boot, seq) of the new ones."""
    agent = request.agent.id
    new: list[tuple[str, int]] = []
    for index, row in request.batches:
        batch_id = writer.insert_batch(agent, row, received_ms)
        status: ItemStatus = "duplicate" if batch_id is None else "accepted"
        request.results[index] = ItemResult(row.boot_id, row.seq, status)
        if batch_id is not None:
            new.append((row.boot_id, row.seq))
            if row.events:
                writer.insert_events(agent, batch_id, row.events)
    return new
