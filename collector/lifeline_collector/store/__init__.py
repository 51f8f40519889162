"""The collector's store: agents and their tokens, batches with their samples, events, the latest
value of every series, and the alert history — in one SQLite file or one PostgreSQL database.

Rooms: ``schema`` (tables and numbered migrations of both engines), ``backends`` (the SQLite
connection and the PostgreSQL pool), ``core`` (``Store``: opening, transactions, queries, and the
batch ``Writer``). Callers import what they use from here.
"""

from lifeline_collector.store.core import (
    CODEC_JSON_LZ4,
    CODEC_NONE,
    CODEC_SERIES_LZ4,
    AgentRow,
    BatchRow,
    LatestRow,
    LatestState,
    MetaCursor,
    SeqTotals,
    Store,
    Writer,
    hash_token,
    labels_key,
    pack_samples,
    pack_series,
    unpack_samples,
)
from lifeline_collector.store.schema import SCHEMA_VERSION

__all__ = [
    "CODEC_JSON_LZ4",
    "CODEC_NONE",
    "CODEC_SERIES_LZ4",
    "SCHEMA_VERSION",
    "AgentRow",
    "BatchRow",
    "LatestRow",
    "LatestState",
    "MetaCursor",
    "SeqTotals",
    "Store",
    "Writer",
    "hash_token",
    "labels_key",
    "pack_samples",
    "pack_series",
    "unpack_samples",
]
