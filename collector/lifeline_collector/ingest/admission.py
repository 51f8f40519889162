"""What an agent may put into the collector, checked per batch: metrics and labels the catalog
declares for agents (not the collector's own), and the ``[limits]`` on events.

A refusal names the first culprit with its field path; both decoders ask here.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

from lifeline_collector.limits import LimitsSection
from lifeline_wire.catalog import CATALOG
from lifeline_wire.catalog import collector as collector_catalog
from lifeline_wire.schema import Batch, Event, Sample, SeriesPoints

COLLECTOR_ONLY = frozenset(spec.name for spec in collector_catalog.METRICS)

# What an agent may send: metric name → the labels it may carry (collector-only metrics left out).
ADMISSIBLE = {name: frozenset(spec.labels) for name, spec in CATALOG.items() if name not in COLLECTOR_ONLY}


DEFAULT_LIMITS = LimitsSection()


def limits_problem(index: int, events: Sequence[Event], limits: LimitsSection) -> tuple[str, str] | None:
    """(reason, text) when a batch's events break a ``[limits]`` key, or None."""
    if len(events) > limits.max_events_per_batch:
        return "events", (
            f"$.batches[{index}].events: {len(events)} events, over limits.max_events_per_batch"
            f" ({limits.max_events_per_batch})"
        )
    longest = limits.max_event_attribute_length
    for number, event in enumerate(events):
        attributes = event.attributes
        if len(attributes) > limits.max_event_attributes:
            return "event_attributes", (
                f"$.batches[{index}].events[{number}].attributes: {len(attributes)} attributes, over"
                f" limits.max_event_attributes ({limits.max_event_attributes})"
            )
        for name, value in attributes.items():
            if isinstance(value, str) and len(value) > longest:
                return "event_attributes", (
                    f"$.batches[{index}].events[{number}].attributes.{name}: {len(value)} characters,"
                    f" over limits.max_event_attribute_length ({longest})"
                )
    return None


def check_batch(index: int, batch: Batch) -> str | None:
    """Why a decoded batch breaks the catalog (unknown metric, undeclared label), or None."""
    admissible = ADMISSIBLE
    for item in chain[Sample | SeriesPoints](batch.samples, batch.series):  # one lookup, one test each
        allowed = admissible.get(item.name)
        if allowed is None or not item.labels.keys() <= allowed:
            break
    else:
        return None
    # Something is wrong: name the first culprit.
    places = [("samples", number, item.name, item.labels) for number, item in enumerate(batch.samples)]
    places += [("series", number, item.name, item.labels) for number, item in enumerate(batch.series)]
    for form, number, name, labels in places:
        path = f"$.batches[{index}].{form}[{number}]"
        spec = CATALOG.get(name)
        if spec is None:
            return f"{path}.name: unknown metric {name!r} (not in the catalog)"
        if name in COLLECTOR_ONLY:
            return f"{path}.name: {name} is exposed by the collector itself; agents may not send it"
        for label in labels:
            if label not in spec.labels:
                declared = ", ".join(spec.labels) or "none"
                return f"{path}.labels.{label}: not a label of {name} (allowed: {declared})"
    return None
