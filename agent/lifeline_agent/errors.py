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
