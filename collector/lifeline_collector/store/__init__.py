"""The collector's store: agents and their tokens, batches with their samples, events, the latest
value of every series — in one SQLite file or one PostgreSQL database.

Rooms, one job each:

- ``core``: ``Store``, the object callers hold — opens the database, runs transactions, reads back;
- ``schema``: the tables of both engines and their numbered migrations;
- ``backends``: the SQLite connection and the PostgreSQL pool behind ``Store``;
- ``agents``: agents and their hashed tokens;
- ``writer``: the ingest transaction (a group commit), sample numbering, duplicate batches;
- ``codec``: how batches and latest values are packed, and the row types read back.

Alert records live with alerting (``alerting.store``), the people tables with ``people.store``;
both keep their rows through ``Store``. Callers import what they use from here.
"""

from lifeline_collector.store.agents import AgentRow, hash_token
from lifeline_collector.store.codec import (
    CODEC_JSON_LZ4,
    CODEC_NONE,
    CODEC_SERIES_LZ4,
    BatchRow,
    LatestRow,
    LatestState,
    SeqTotals,
    decode_states,
    encode_states,
    labels_key,
    pack_samples,
    pack_series,
    unpack_samples,
)
from lifeline_collector.store.core import MetaCursor, Store
from lifeline_collector.store.schema import SCHEMA_VERSION
from lifeline_collector.store.writer import Writer

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
    "decode_states",
    "encode_states",
    "hash_token",
    "labels_key",
    "pack_samples",
    "pack_series",
    "unpack_samples",
]
