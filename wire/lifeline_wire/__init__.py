"""The agent↔collector contract: one batch schema, encoded and decoded the same way by both ends,
and the heartbeat datagram (``lifeline_wire.heartbeat``)."""

from lifeline_wire.heartbeat import PATHS as BEAT_PATHS
from lifeline_wire.heartbeat import BeatDigest, BeatError, Heartbeat
from lifeline_wire.schema import (
    SCHEMA_VERSION,
    SUPPORTED_VERSIONS,
    Batch,
    Envelope,
    Event,
    IngestResponse,
    ItemResult,
    Sample,
    SeriesPoints,
    WireError,
    decode_envelope,
    decode_response,
    encode,
)

__all__ = [
    "BEAT_PATHS",
    "SCHEMA_VERSION",
    "SUPPORTED_VERSIONS",
    "Batch",
    "BeatDigest",
    "BeatError",
    "Envelope",
    "Event",
    "Heartbeat",
    "IngestResponse",
    "ItemResult",
    "Sample",
    "SeriesPoints",
    "WireError",
    "decode_envelope",
    "decode_response",
    "encode",
]
