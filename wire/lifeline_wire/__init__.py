"""The agent↔collector contract: one batch schema, encoded and decoded the same way by both ends."""

from lifeline_wire.schema import (
    SCHEMA_VERSION,
    Batch,
    Envelope,
    Event,
    IngestResponse,
    ItemResult,
    Sample,
    WireError,
    decode_envelope,
    decode_response,
    encode,
)

__all__ = [
    "SCHEMA_VERSION",
    "Batch",
    "Envelope",
    "Event",
    "IngestResponse",
    "ItemResult",
    "Sample",
    "WireError",
    "decode_envelope",
    "decode_response",
    "encode",
]
