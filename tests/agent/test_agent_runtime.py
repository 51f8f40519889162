"""The agent process's malloc settings."""

from __future__ import annotations

import platform

from lifeline_agent.runtime import tune_malloc


def test_malloc_is_tuned_on_glibc() -> None:
    glibc = platform.libc_ver()[0] == "glibc"
    assert tune_malloc() is glibc
