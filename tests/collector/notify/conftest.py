"""Fixtures of the notifier tests; helpers live in notify_kit (put on sys.path here)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from notify_kit import ALERTMANAGER, Cert, running_alertmanager, self_signed


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    if shutil.which(ALERTMANAGER) is None:
        pytest.skip("prometheus-alertmanager is not installed")
    with running_alertmanager(tmp_path) as url:
        yield url


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    return self_signed(tmp_path_factory.mktemp("tls"))
