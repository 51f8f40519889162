"""``[limits]``: what one agent may put into the collector, so a hostile or broken agent hurts
only its own data (memory, /metrics, the position page and alert texts stay bounded for all).

The wire contract fixes the rest and is not configurable: label values ≤ 256 characters with no
control or bidirectional-override characters, ≤ 16 labels, ≤ 20,000 samples and ≤ 2,000 events
per batch, ≤ 500 batches per request, ``seq`` below 2**53, JSON no deeper than the contract.
"""

from __future__ import annotations

from dataclasses import dataclass

from lifeline_wire.schema import MAX_EVENT_ATTRIBUTE_LENGTH, MAX_EVENT_ATTRIBUTES, MAX_EVENTS_PER_BATCH
from lifeline_wire.tomlcfg import Section

DEFAULT_MAX_SERIES = 10_000  # a real agent sends a few hundred series
# A clock a day ahead still moves "latest" (an RTC kept in local time is hours off until NTP syncs);
# a clock that jumped to 2030 does not freeze a position's alerting until 2030.
DEFAULT_MAX_CLOCK_AHEAD = 86_400.0


@dataclass(frozen=True, slots=True)
class LimitsSection:
    max_series_per_agent: int = DEFAULT_MAX_SERIES
    max_events_per_batch: int = MAX_EVENTS_PER_BATCH
    max_event_attributes: int = MAX_EVENT_ATTRIBUTES
    max_event_attribute_length: int = MAX_EVENT_ATTRIBUTE_LENGTH
    max_clock_ahead: float = DEFAULT_MAX_CLOCK_AHEAD  # seconds a sample may be ahead of the collector


def read_limits(section: Section) -> LimitsSection:
    limits = LimitsSection(
        max_series_per_agent=section.integer(
            "max_series_per_agent", DEFAULT_MAX_SERIES, min=1, max=1_000_000
        ),
        max_events_per_batch=section.integer(
            "max_events_per_batch", MAX_EVENTS_PER_BATCH, min=1, max=MAX_EVENTS_PER_BATCH
        ),
        max_event_attributes=section.integer(
            "max_event_attributes", MAX_EVENT_ATTRIBUTES, min=1, max=MAX_EVENT_ATTRIBUTES
        ),
        max_event_attribute_length=section.integer(
            "max_event_attribute_length", MAX_EVENT_ATTRIBUTE_LENGTH, min=1, max=MAX_EVENT_ATTRIBUTE_LENGTH
        ),
        max_clock_ahead=section.duration(
            "max_clock_ahead", DEFAULT_MAX_CLOCK_AHEAD, min=60.0, max=365 * 86_400.0
        ),
    )
    section.finish()
    return limits
