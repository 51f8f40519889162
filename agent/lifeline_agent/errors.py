"""Exceptions of the agent.

::

    AgentError                    anything the agent reports as a runtime failure (exit code 1)
    ├── SpoolError                the spool file cannot be opened or written
    └── DeliveryError             one attempt to hand batches to a collector did not complete
        ├── RetryableDelivery     429, 5xx, network trouble: try again later (``retry_after``)
        └── RefusedDelivery       401/403/400/422…: the collector said no; retrying the same
                                  request cannot help (``status``, ``reason``)

Configuration problems are ``lifeline_wire.tomlcfg.ConfigError`` (exit code 2). A probe never
raises for a network failure: it returns a failed ``ProbeResult`` with a reason.

Reading the laptop's own state (the sources, the netlink reader they share, the watchers) has a
tree of its own, so the netlink code needs no import of ``sources``::

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


class AgentError(Exception):
    """A runtime failure of the agent."""


class SpoolError(AgentError):
    """The spool cannot be opened or written."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"spool {path}: {reason}")
        self.path = path
        self.reason = reason


class DeliveryError(AgentError):
    """One delivery attempt failed."""

    def __init__(self, url: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"{url}: {reason}" if status is None else f"{url}: HTTP {status}: {reason}")
        self.url = url
        self.reason = reason
        self.status = status


class RetryableDelivery(DeliveryError):
    """Worth retrying later; ``retry_after`` is the collector's wish in seconds, if it said one."""

    def __init__(
        self, url: str, reason: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(url, reason, status)
        self.retry_after = retry_after


class RefusedDelivery(DeliveryError):
    """The collector refused the request; sending it again unchanged cannot succeed."""


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
