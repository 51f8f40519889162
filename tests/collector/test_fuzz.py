"""A CI-sized fuzz run (a few hundred cases; ``bench/fuzz.py`` runs ten thousand against a real
server): schemathesis over the collector's OpenAPI document and hypothesis mutating real agent
batches, over real sockets. No case may answer 5xx, the alert tick must never raise, no rule may
fail on what was accepted, and the store stays healthy."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
from collector_kit import free_port, make_config
from fuzz_kit import AGENT, Request, mutated_ingest, openapi_cases
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_kit import served

ADMIN_TOKEN = "fuzz-admin-token-0123456789"
CASES = 300


def test_no_request_answers_5xx_or_breaks_alerting(tmp_path: Path) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text(ADMIN_TOKEN)
    config = make_config(
        tmp_path,
        server={"listen": f"127.0.0.1:{free_port()}"},
        api={"admin_token_file": str(token_file), "lockout_after": 1000},
        auth={"read_access": "open"},
    )
    statuses: Counter[int] = Counter()
    with served(config, ticker=False) as (base, service), httpx.Client(base_url=base, timeout=30) as client:
        token = service.store.add_agent(AGENT, site="north", position="1", now_ms=int(time.time() * 1000))

        @settings(max_examples=CASES, database=None, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.one_of(mutated_ingest(token), mutated_ingest(token), openapi_cases(token, ADMIN_TOKEN)))
        def one(request: Request) -> None:
            answer = client.request(
                request.method,
                request.path,
                content=request.body,
                headers=request.headers,
                params=request.query,
            )
            statuses[answer.status_code] += 1
            assert answer.status_code < 500, (request, answer.status_code, answer.text[:500])
            # Between requests the server is idle: a tick here raises on a bug (the loop only logs).
            service.tick()

        one()
        assert client.get("/healthz").status_code == 200
    assert not service.engine.rule_errors, service.engine.rule_errors
    assert sum(statuses.values()) >= CASES
    assert statuses[200] > 0  # some mutations are still valid batches: the happy path is exercised
