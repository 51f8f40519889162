"""Fixtures of the collector tests; the helpers live in collector_kit (put on sys.path here)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from collector_kit import T0, Receiver, running_receiver

from lifeline_collector.clock import ManualClock
from lifeline_lab.postgres import Server, postgres_bin, running_postgres


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as state:
        yield state


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    """One PostgreSQL server for the session (each test takes a fresh database of it)."""
    if postgres_bin() is None:
        pytest.skip("postgresql is not installed (make test installs it)")
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_dsn(postgres_server: Server) -> Iterator[str]:
    with postgres_server.fresh_database() as dsn:
        yield dsn
