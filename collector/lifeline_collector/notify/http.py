"""Posting JSON to a peer and turning the outcome into "done", "retry" or "give up".

Status semantics follow Alertmanager's ``notify/util.go``: 2xx delivered; 408, 429 and 5xx worth
retrying (honouring Retry-After); any other 4xx will not get better by retrying. The rule itself
is :func:`lifeline_wire.retry.decide`, shared with the shipper and remote-write.
"""

from __future__ import annotations

import time

import httpx

from lifeline_collector.errors import NotifyError
from lifeline_collector.notify.base import NotifierConfig, redact, safe_url
from lifeline_wire.retry import RetryDecision, decide, parse_retry_after


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
    status = response.status_code
    decision = decide(status)
    if decision is RetryDecision.DONE:
        return
    snippet = redact(response.text[:200].strip().replace("\n", " "), secrets)
    raise NotifyError(
        config.name,
        f"{where} answered {status}" + (f": {snippet}" if snippet else ""),
        retryable=decision is RetryDecision.RETRY,
        status=status,
        retry_after=parse_retry_after(response.headers.get("Retry-After"), time.time()),
    )
