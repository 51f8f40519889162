"""Posting JSON to a peer and turning the outcome into "done", "retry" or "give up".

Status semantics follow Alertmanager's ``notify/util.go``: 2xx delivered; 429 and 5xx worth
retrying (honouring Retry-After); any other 4xx will not get better by retrying.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from lifeline_collector.errors import NotifyError
from lifeline_collector.notify.base import NotifierConfig, redact, safe_url


def make_client(config: NotifierConfig) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=config.timeout, follow_redirects=False)


async def post_json(client: httpx.AsyncClient, config: NotifierConfig, url: str, body: bytes) -> None:
    secrets = config.secrets()
    where = safe_url(url)
    try:
        response = await client.post(url, content=body, headers=config.request_headers())
    except httpx.TimeoutException:
        raise NotifyError(
            config.name, f"timed out after {config.timeout:g}s posting to {where}", retryable=True
        ) from None
    except httpx.HTTPError as exc:
        detail = redact(str(exc) or type(exc).__name__, secrets)
        raise NotifyError(
            config.name, f"cannot reach {where}: {type(exc).__name__}: {detail}", retryable=True
        ) from None
    if response.is_success:
        return
    status = response.status_code
    snippet = redact(response.text[:200].strip().replace("\n", " "), secrets)
    retryable = status == 429 or status >= 500
    raise NotifyError(
        config.name,
        f"{where} answered {status}" + (f": {snippet}" if snippet else ""),
        retryable=retryable,
        status=status,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
