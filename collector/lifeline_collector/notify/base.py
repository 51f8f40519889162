"""What every notifier shares: its config, the context it runs in, the interface and the registry."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from lifeline_collector.alerting.alert import AlertGroup
from lifeline_collector.clock import Clock
from lifeline_wire.tomlcfg import Section

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_ATTEMPTS = 6


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    """Keys every ``[[notifiers]]`` entry has. Secrets are kept out of ``repr``."""

    kind: str
    name: str
    url: str
    timeout: float = DEFAULT_TIMEOUT
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    token_file: str = ""
    token: str = field(default="", repr=False)
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    # Every URL, for kinds that post to several peers (an Alertmanager cluster); url is the first.
    urls: tuple[str, ...] = ()

    def request_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": "lifeline-collector"}
        headers.update(self.headers)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in a log line or an error."""
        urls = self.urls or (self.url,)
        values = [self.token, *self.headers.values(), *(s for url in urls for s in _url_secrets(url))]
        return tuple(value for value in values if value)


def _url_secrets(url: str) -> list[str]:
    match = re.match(r"^[a-z]+://([^@/]+)@", url)
    return [match.group(1)] if match else []


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


def safe_url(url: str) -> str:
    """The URL without credentials or query string, for logs and errors."""
    url = re.sub(r"^([a-z]+://)[^@/]+@", r"\1", url)
    return url.split("?", 1)[0]


def read_common(section: Section, kind: str, *, url_list: bool = False) -> dict[str, object]:
    """Read the shared keys of one ``[[notifiers]]`` table (``kind`` was read by the caller).

    With ``url_list`` the ``url`` key may also be a list of URLs (peers that all get every post).
    """
    name = section.text("name", required=True, pattern=NAME_PATTERN)
    if url_list and isinstance(section.data.get("url"), list):
        urls = section.str_list("url")
        if not urls:
            section.error("url", "must name at least one URL")
        elif len(set(urls)) != len(urls):
            section.error("url", "lists the same URL twice")
    else:
        urls = (section.text("url", required=True),)
    for url in urls:
        if isinstance(section.data.get("url"), str | list) and not re.match(r"^https?://[^/\s]+", url):
            section.error("url", f"must be an http:// or https:// URL (got {safe_url(url)!r})")
    url = urls[0] if urls else ""
    timeout = section.duration("timeout", DEFAULT_TIMEOUT, min=0.1, max=300.0)
    headers = section.str_map("headers")
    max_attempts = section.integer("max_attempts", DEFAULT_MAX_ATTEMPTS, min=1, max=100)
    token_file = section.text("token_file")
    token = ""
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            section.error("token_file", f"cannot read {token_file} ({exc.strerror or type(exc).__name__})")
        else:
            if not token:
                section.error("token_file", f"{token_file} is empty")
    if token_file and any(key.lower() == "authorization" for key in headers):
        section.error("headers.Authorization", "conflicts with token_file (use one of them)")
    return {
        "kind": kind,
        "name": name,
        "url": url,
        "timeout": timeout,
        "headers": headers,
        "token_file": token_file,
        "token": token,
        "max_attempts": max_attempts,
        "urls": urls if url_list else (),
    }


@dataclass(frozen=True, slots=True)
class NotifyContext:
    external_url: str  # the collector's public URL, for links
    clock: Clock
    resend_interval: float


class Notifier(Protocol):
    name: str
    kind: str
    # Whether unchanged firing alerts are sent again every resend_interval (Alertmanager needs
    # that to keep an alert alive; a paging webhook does not want it).
    wants_resend: bool
    secrets: tuple[str, ...]
    max_attempts: int

    async def send(self, group: AlertGroup) -> None:
        """Deliver one group, or raise NotifyError saying whether a retry can help."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class NotifierKind:
    """One registry entry: the kind's name, its config reader and how to build it."""

    kind: str
    read_config: Callable[[Section], NotifierConfig]
    build: Callable[[NotifierConfig, NotifyContext], Notifier]
    summary: str


REGISTRY: dict[str, NotifierKind] = {}


def register(kind: NotifierKind) -> NotifierKind:
    if kind.kind in REGISTRY:  # pragma: no cover - a programming error caught at import
        raise RuntimeError(f"notifier kind {kind.kind} registered twice")
    REGISTRY[kind.kind] = kind
    return kind
