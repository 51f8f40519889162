"""Fixtures of the delivery tests; the helpers live in delivery_kit (put on sys.path here)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from delivery_kit import LoopbackCollector


@pytest.fixture
def collector() -> Iterator[LoopbackCollector]:
    """A loopback collector over plain HTTP."""
    peer = LoopbackCollector()
    yield peer
    peer.close()


@pytest.fixture
def second_collector() -> Iterator[LoopbackCollector]:
    peer = LoopbackCollector()
    yield peer
    peer.close()
