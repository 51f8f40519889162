"""The serving collector's garbage-collector settings: what start-up loaded is never walked again."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from lifeline_collector.runtime import GC_THRESHOLDS, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """The test process's own collector settings, put back afterwards."""
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_what_start_loaded_leaves_the_collected_generations(restored_gc: None) -> None:
    fleet_view = [{"agent": f"pos-{n}", "latest": [n, n + 1]} for n in range(100)]  # as loaded at start
    gc.collect()
    assert any(item is fleet_view[0] for item in gc.get_objects(generation=2))
    tune_gc()
    # a full collection would walk generation 2: the frozen start-up objects are not in it
    assert not any(item is fleet_view[0] for item in gc.get_objects(generation=2))
    assert gc.get_threshold() == GC_THRESHOLDS
    later = [{"new": 1}]
    gc.collect(0)  # what is made while serving is still collected as usual
    assert any(item is later for item in gc.get_objects(generation=1)) or any(
        item is later for item in gc.get_objects(generation=2)
    )
