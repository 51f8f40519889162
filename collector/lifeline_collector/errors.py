"""Exceptions of the collector.

::

    CollectorError                 anything the collector raises on purpose
    ├── StoreError                 the SQLite store failed (locked, full, corrupt); a retry may help
    │   └── UnknownAgentError      an agent id that is not registered (``agents revoke``)
    │       DuplicateAgentError    ``agents add`` for an id that already exists
    └── NotifyError                a notification was not delivered; ``retryable`` says if trying
                                   again can help (network, 429, 5xx) or not (other 4xx)

Config problems are ``lifeline_wire.tomlcfg.ConfigError`` (every problem with its dotted key).
Messages never contain a token, a header value or a URL's credentials.
"""

from __future__ import annotations


class CollectorError(Exception):
    """Base of every error the collector raises on purpose."""


class StoreError(CollectorError):
    """The store could not complete an operation."""


class UnknownAgentError(StoreError):
    def __init__(self, agent_id: str) -> None:
        super().__init__(f"no agent {agent_id!r} is registered")
        self.agent_id = agent_id


class DuplicateAgentError(StoreError):
    def __init__(self, agent_id: str) -> None:
        super().__init__(f"agent {agent_id!r} already exists (revoke it first to issue a new token)")
        self.agent_id = agent_id


class NotifyError(CollectorError):
    """A notifier could not deliver. ``retry_after`` is the peer's Retry-After in seconds, if any."""

    def __init__(
        self,
        notifier: str,
        reason: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"notifier {notifier}: {reason} ({'will retry' if retryable else 'not retried'})")
        self.notifier = notifier
        self.reason = reason
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
