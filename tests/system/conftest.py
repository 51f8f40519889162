"""Fixtures of the system tests; the process helpers live in delivery_procs (put on sys.path here)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent" / "delivery"))


@pytest.fixture
def cad_listener() -> Iterator[int]:
    """A TCP port on loopback that accepts connections (the agent's CAD probe target), owned by the test."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(128)
        yield int(server.getsockname()[1])
