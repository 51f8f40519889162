"""The one list of sources: each module registers its kind, factory, backends and metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from lifeline_agent.config import AgentConfig
from lifeline_agent.sources.base import Source, SourceSample, sample
from lifeline_wire.catalog import CATALOG

log = logging.getLogger(__name__)

# A factory builds its source from the config; ``built`` holds the sources made before it (the
# routes source reads the VPN source's endpoints). None means "off in [providers]".
Factory = Callable[[AgentConfig, Mapping[str, Source]], Source | None]


@dataclass(frozen=True, slots=True)
class SourceSpec:
    kind: str
    factory: Factory
    metrics: tuple[str, ...]
    backends: tuple[str, ...]  # in the order ``auto`` tries them
    privileges: str  # what the real backend needs, in words
    summary: str


REGISTRY: dict[str, SourceSpec] = {}


def register(spec: SourceSpec) -> SourceSpec:
    if spec.kind in REGISTRY:
        raise ValueError(f"source kind {spec.kind!r} registered twice")
    undeclared = [m for m in spec.metrics if m not in CATALOG]
    if undeclared:
        raise ValueError(f"source {spec.kind!r} declares metrics missing from the catalog: {undeclared}")
    REGISTRY[spec.kind] = spec
    return spec


def build_sources(config: AgentConfig) -> list[Source]:
    """Every source the config asks for, in registry order; unavailable ones are kept and logged.

    A source that cannot run here is returned anyway (``available()`` says why) so the agent reports
    it as unavailable instead of showing "no data" as "healthy". Sources turned off are left out.
    """
    built: dict[str, Source] = {}
    for kind, spec in REGISTRY.items():
        source = spec.factory(config, built)
        if source is None:
            log.info("source %s is off in [providers]", kind)
            continue
        availability = source.available()
        if availability.ok:
            log.info("source %s available", kind)
        else:
            log.warning("source %s unavailable: %s", kind, availability.reason)
        built[kind] = source
    return list(built.values())


def provider_samples(sources: list[Source]) -> tuple[SourceSample, ...]:
    """``lifeline_provider_available`` for each source, so a missing provider is visible in metrics."""
    return tuple(
        sample("lifeline_provider_available", 1.0 if s.available().ok else 0.0, provider=s.name)
        for s in sources
    )
