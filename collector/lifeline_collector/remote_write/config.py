"""``[remote_write]``: the receiver, its credentials and extra headers, batching, the queue bound,
backoff and retry limit, and the cursor file that turns on durable mode."""

from __future__ import annotations

from dataclasses import dataclass

from lifeline_collector.remote_write.prompb import PROTOCOL_HEADERS
from lifeline_wire.tomlcfg import Section

# Headers an operator may not override: they define the protocol or carry the credentials.
_RESERVED_HEADERS = {name.lower() for name in PROTOCOL_HEADERS} | {"authorization", "content-length"}


@dataclass(frozen=True, slots=True)
class RemoteWriteConfig:
    """``[remote_write]`` in the collector config. An empty ``url`` turns remote-write off."""

    url: str = ""
    timeout: float = 10.0
    bearer_token_file: str = ""
    basic_auth_username: str = ""
    basic_auth_password_file: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    max_samples_per_send: int = 2000
    batch_wait: float = 1.0
    queue_max_samples: int = 100_000
    min_backoff: float = 0.5
    max_backoff: float = 30.0
    # A receiver that keeps answering 429/5xx for one batch this long is given up on (the batch
    # counts as failed); an unreachable receiver is retried without limit.
    retry_limit: float = 300.0
    # Durable mode: where the id of the last stored sample sent is kept. Empty = in-memory queue.
    cursor_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @property
    def durable(self) -> bool:
        return bool(self.cursor_file)


def read_remote_write(section: Section) -> RemoteWriteConfig:
    """Read the ``[remote_write]`` table; problems go to the section's collector with their path."""
    default = RemoteWriteConfig()
    url = section.text("url", default.url, pattern=r"https?://[^\s/]+(/\S*)?")
    timeout = section.duration("timeout", default.timeout, min=0.1, max=300.0)
    token_file = section.text("bearer_token_file", default.bearer_token_file)
    user = section.text("basic_auth_username", default.basic_auth_username)
    password_file = section.text("basic_auth_password_file", default.basic_auth_password_file)
    headers = section.str_map("headers")
    max_samples = section.integer("max_samples_per_send", default.max_samples_per_send, min=1, max=100_000)
    batch_wait = section.duration("batch_wait", default.batch_wait, min=0.01, max=60.0)
    queue_max = section.integer("queue_max_samples", default.queue_max_samples, min=1)
    min_backoff = section.duration("min_backoff", default.min_backoff, min=0.01, max=60.0)
    max_backoff = section.duration("max_backoff", default.max_backoff, min=0.01, max=3600.0)
    retry_limit = section.duration("retry_limit", default.retry_limit, min=0.0)
    cursor_file = section.text("cursor_file", default.cursor_file)
    section.finish()

    if token_file and (user or password_file):
        section.error("bearer_token_file", "use either bearer_token_file or basic_auth_*, not both")
    if bool(user) != bool(password_file):
        section.error("basic_auth_username", "basic_auth_username and basic_auth_password_file go together")
    for name in headers:
        if name.lower() in _RESERVED_HEADERS:
            section.problems.add(
                f"{section.key('headers')}.{name}", "is set by remote-write itself and cannot be overridden"
            )
    if max_backoff < min_backoff:
        section.error("max_backoff", f"must be ≥ min_backoff ({min_backoff:g}s)")
    if queue_max < max_samples:
        section.error("queue_max_samples", f"must be ≥ max_samples_per_send ({max_samples})")
    if cursor_file and not url:
        section.error("cursor_file", "needs url")
    return RemoteWriteConfig(
        url=url,
        timeout=timeout,
        bearer_token_file=token_file,
        basic_auth_username=user,
        basic_auth_password_file=password_file,
        headers=tuple(sorted(headers.items())),
        max_samples_per_send=max_samples,
        batch_wait=batch_wait,
        queue_max_samples=queue_max,
        min_backoff=min_backoff,
        max_backoff=max_backoff,
        retry_limit=retry_limit,
        cursor_file=cursor_file,
    )
