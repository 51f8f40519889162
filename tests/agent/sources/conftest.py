"""Shared helpers for the source tests: recorded fixtures and throw-away network namespaces."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


def _need_root() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (network namespaces)")


@pytest.fixture
def netns() -> Iterator[Callable[[], str]]:
    """A factory of uniquely named network namespaces, all deleted at the end of the test."""
    _need_root()
    created: list[str] = []

    def make() -> str:
        name = f"llsrc-{os.getpid()}-{secrets.token_hex(3)}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        created.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return name

    yield make
    for name in created:
        subprocess.run(["ip", "netns", "del", name], check=False)


def sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True)
