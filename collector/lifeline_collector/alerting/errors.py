"""Exceptions of the alerting package (silences, acknowledgements).

::

    CollectorError                       lifeline_collector.errors
    └── AlertingError                    an operator's request about alerts could not be done
        ├── MatcherError                 a matcher is malformed ("site=north", "alertname=~Cad.*")
        │                                or its regex does not compile; ``matcher`` is the text
        ├── SilenceError                 a silence is invalid (no matcher, ends before it starts,
        │                                no creator); ``field`` names the bad field
        ├── UnknownSilenceError          no silence with that id (``silences expire``)
        └── UnknownAlertError            no active alert with that fingerprint (``alerts ack``)
"""

from __future__ import annotations

from lifeline_collector.errors import CollectorError


class AlertingError(CollectorError):
    """Base of the alerting package's errors."""


class MatcherError(AlertingError):
    def __init__(self, matcher: str, reason: str) -> None:
        super().__init__(f"matcher {matcher!r}: {reason}")
        self.matcher = matcher
        self.reason = reason


class SilenceError(AlertingError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class UnknownSilenceError(AlertingError):
    def __init__(self, silence_id: str) -> None:
        super().__init__(f"no silence {silence_id!r}")
        self.silence_id = silence_id


class UnknownAlertError(AlertingError):
    def __init__(self, fingerprint: str) -> None:
        super().__init__(f"no active alert with fingerprint {fingerprint!r}")
        self.fingerprint = fingerprint
