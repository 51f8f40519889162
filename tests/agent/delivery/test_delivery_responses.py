"""Bad answers from the collector and TLS failures: documented behaviour, nothing kept is lost.

(500, 429 with Retry-After, 413, 422, 401 and a malformed 200 are covered in
tests/agent/delivery/test_shipper.py; these add 408, 503 with Retry-After, other 4xx with the
collector's reason, and TLS against real TLS servers.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from delivery_kit import (
    CERTS,
    Answer,
    LoopbackCollector,
    collector_section,
    fill,
    make_shipper,
    run_until,
    server_tls,
)

from lifeline_agent.delivery.shipper import RoundResult, Shipper
from lifeline_agent.delivery.spool import SqliteSpool


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[SqliteSpool]:
    spool = SqliteSpool(str(tmp_path / "spool.db"))
    yield spool
    spool.close()


def ship(shipper: Shipper, times: int = 1) -> list[RoundResult]:
    async def main() -> list[RoundResult]:
        out = [await shipper.ship_pending() for _ in range(times)]
        await shipper.aclose()
        return out

    return asyncio.run(main())


def test_408_is_retried(collector: LoopbackCollector, spool: SqliteSpool) -> None:
    ids = fill(spool, 2)
    collector.rules = [lambda _ids: Answer(408, b"request timeout")]
    shipper = make_shipper(collector_section(collector.url), spool)
    run_until(shipper, lambda: spool.depth() == 0)
    assert collector.stored == ids
    assert len(collector.requests) == 2
    assert shipper.stats.failures["server"] == 1


def test_503_with_retry_after_waits_what_the_collector_asked(
    collector: LoopbackCollector, spool: SqliteSpool
) -> None:
    fill(spool, 2)
    collector.rules = [lambda _ids: Answer(503, b'{"error":"store unavailable"}', {"Retry-After": "7"})]
    shipper = make_shipper(collector_section(collector.url), spool)
    (outcome,) = ship(shipper)
    assert outcome.wait >= 7.0  # not the 20 ms backoff
    assert not outcome.progressed
    assert spool.depth() == 2


@pytest.mark.parametrize(
    ("status", "body", "logged", "kind"),
    [
        (403, b'{"error":"batches belong to another agent","field":"$.batches[0].agent_id"}',
         "batches belong to another agent (field $.batches[0].agent_id)", "auth"),
        (404, b"<html>no such page</html>", "<html>no such page</html>", "invalid"),
    ],
)  # fmt: skip
def test_other_4xx_is_not_retried_keeps_the_batches_and_logs_the_reason(
    collector: LoopbackCollector,
    spool: SqliteSpool,
    caplog: pytest.LogCaptureFixture,
    status: int,
    body: bytes,
    logged: str,
    kind: str,
) -> None:
    fill(spool, 3)
    collector.always = lambda _ids: Answer(status, body)
    shipper = make_shipper(collector_section(collector.url), spool, refused_pause=3600.0)
    with caplog.at_level(logging.WARNING, logger="lifeline_agent.delivery.shipper"):
        outcomes = ship(shipper, times=3)
    assert len(collector.requests) == 1  # the path rests for refused_pause: no second request
    assert all(o.wait > 3000 for o in outcomes)
    assert spool.depth() == 3
    assert shipper.stats.failures[kind] == 1
    assert any(f"HTTP {status}: {logged}" in r.getMessage() for r in caplog.records)


def test_a_malformed_200_keeps_the_batches_and_they_arrive_once_later(
    collector: LoopbackCollector, spool: SqliteSpool
) -> None:
    ids = fill(spool, 3)
    collector.rules = [lambda _ids: Answer(200, b"<html>captive portal</html>")]
    shipper = make_shipper(collector_section(collector.url), spool)
    run_until(shipper, lambda: spool.depth() == 0)
    assert collector.stored == ids
    assert shipper.stats.failures["bad_response"] == 1


@pytest.fixture
def untrusted_tls() -> Iterator[LoopbackCollector]:
    peer = LoopbackCollector(tls=server_tls("untrusted.pem", "untrusted.key"))
    yield peer
    peer.close()


@pytest.fixture
def trusted_tls() -> Iterator[LoopbackCollector]:
    peer = LoopbackCollector(tls=server_tls("server.pem", "server.key"))
    yield peer
    peer.close()


@pytest.fixture
def mutual_tls() -> Iterator[LoopbackCollector]:
    peer = LoopbackCollector(tls=server_tls("server.pem", "server.key", client_ca="ca.pem"))
    yield peer
    peer.close()


CA = str(CERTS / "ca.pem")


def test_an_untrusted_certificate_is_a_clear_tls_failure_with_backoff(
    untrusted_tls: LoopbackCollector, spool: SqliteSpool, caplog: pytest.LogCaptureFixture
) -> None:
    fill(spool, 2)
    shipper = make_shipper(collector_section(untrusted_tls.url, ca_file=CA), spool)
    route = shipper.paths.routes()[0]
    with caplog.at_level(logging.WARNING, logger="lifeline_agent.delivery.shipper"):
        outcomes = ship(shipper, times=4)
    assert spool.depth() == 2
    assert untrusted_tls.requests == []
    assert shipper.stats.failures["tls"] >= 1
    # Not a retry-forever loop: the first failure cools the path down, the calls right after it
    # try nothing (one handshake), and each new failure would wait longer.
    assert untrusted_tls.handshake_failures == 1
    assert shipper.paths.state(route).backoff.attempt == 1
    assert all(o.wait > 0 for o in outcomes)
    (warning,) = [r for r in caplog.records if "TLS failure" in r.getMessage()]
    assert "certificate verify failed" in warning.getMessage()
    assert "collector.ca_file" in warning.getMessage()


@pytest.mark.parametrize("interface", ["", "lo"])
def test_ca_file_makes_the_collector_trusted(
    trusted_tls: LoopbackCollector, spool: SqliteSpool, interface: str
) -> None:
    ids = fill(spool, 3)
    shipper = make_shipper(collector_section(trusted_tls.url, ca_file=CA, backup_interface=interface), spool)

    async def main() -> None:  # over the default route, and over a client bound to lo (BoundBackend)
        assert await shipper.ship_once(trusted_tls.url + "/api/v1/ingest", interface)
        await shipper.aclose()

    asyncio.run(main())
    assert trusted_tls.stored == ids


def test_mutual_tls_needs_the_client_certificate(mutual_tls: LoopbackCollector, spool: SqliteSpool) -> None:
    ids = fill(spool, 2)
    anonymous = make_shipper(collector_section(mutual_tls.url, ca_file=CA), spool)
    (outcome,) = ship(anonymous)
    assert not outcome.progressed
    # The server's alert ("certificate required") or, when it hangs up first, a reset.
    assert anonymous.stats.failures["tls"] + anonymous.stats.failures["network"] == 1
    assert spool.depth() == 2
    section = collector_section(
        mutual_tls.url,
        ca_file=CA,
        client_cert=str(CERTS / "client.pem"),
        client_key=str(CERTS / "client.key"),
    )
    run_until(make_shipper(section, spool), lambda: spool.depth() == 0)
    assert mutual_tls.stored == ids


def test_a_tls_file_that_cannot_be_loaded_is_reported_and_nothing_is_lost(
    trusted_tls: LoopbackCollector, spool: SqliteSpool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fill(spool, 2)
    missing = str(tmp_path / "agency-ca.pem")
    with caplog.at_level(logging.ERROR, logger="lifeline_agent.delivery.transport"):
        shipper = make_shipper(collector_section(trusted_tls.url, ca_file=missing), spool)
        (outcome,) = ship(shipper)
    assert not outcome.progressed
    assert spool.depth() == 2
    assert shipper.stats.failures["tls"] == 1
    (error,) = [r for r in caplog.records if "TLS set-up failed" in r.getMessage()]
    assert f"collector.ca_file {missing!r} cannot be loaded" in error.getMessage()
    # Once the file is there, the same shipper delivers (it loads TLS again when it retries).
    (tmp_path / "agency-ca.pem").write_bytes((CERTS / "ca.pem").read_bytes())
    shipper.paths.state(shipper.paths.routes()[0]).ready_at = 0.0
    run_until(shipper, lambda: spool.depth() == 0)
    assert len(trusted_tls.stored) == 2
