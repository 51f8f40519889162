"""The agent↔collector contract: one batch schema, encoded and decoded the same way by both ends."""

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
    "SCHEMA_VERSION",
    "SUPPORTED_VERSIONS",
    "Batch",
    "Envelope",
    "Event",
    "IngestResponse",
    "ItemResult",
    "Sample",
    "SeriesPoints",
    "WireError",
    "decode_envelope",
    "decode_response",
    "encode",
]
