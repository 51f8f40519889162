"""Errors of the local sources.

::

    SourceError                    base of everything a source backend raises on purpose
    ├── SourceUnavailable          the backend cannot work here (no hardware, no privilege, not Linux);
    │                              ``reason`` says what is missing, e.g. "needs CAP_NET_ADMIN"
    └── SourceReadError            the backend works but this read failed (timeout, vanished device)
        └── SourceParseError       the data read (a file, a socket reply, a tool's output) is malformed;
                                   ``where`` names the line or key

Sources catch these inside ``read()`` and turn them into a ``Reading`` with ``error`` set, so the
scheduler never sees an exception for an expected failure. Anything else is a programming error.
"""

from __future__ import annotations


class SourceError(Exception):
    """Base of the errors a source backend raises on purpose."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SourceUnavailable(SourceError):
    """The backend cannot work on this machine (hardware, privilege or platform missing)."""


class SourceReadError(SourceError):
    """One read failed; the next may succeed."""


class SourceParseError(SourceReadError):
    """Malformed input; ``where`` names the line or key that was wrong."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.detail = reason
