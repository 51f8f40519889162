"""The heartbeat sender: the offer, the digest, paths and their rates, and beats a real collector takes."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import socket
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from lifeline_agent.clock import SystemClock
from lifeline_agent.config import HeartbeatSection, parse
from lifeline_agent.delivery.transport import Response
from lifeline_agent.errors import RetryableDelivery
from lifeline_agent.health import Assessment
from lifeline_agent.heartbeat import OFFER_PATH, LatestDigest, Sender, digest_of, parse_offer
from lifeline_collector.app import create_app
from lifeline_collector.config import parse as parse_collector
from lifeline_collector.service import Collector
from lifeline_wire import BeatDigest
from lifeline_wire.heartbeat import decode, verify

pytestmark = pytest.mark.anyio

KEY = bytes(range(32))
DIGEST = BeatDigest("none", "ok", 0.0, None, None, False)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ManualClock:
    def __init__(self) -> None:
        self.mono = 100.0

    def time(self) -> float:
        return 1_800_000_000.0 + self.mono

    def monotonic(self) -> float:
        return self.mono


class OfferTransport:
    """Answers the heartbeat offer like a collector would; counts what was asked."""

    def __init__(self, port: int, status: int = 200) -> None:
        self.port = port
        self.status = status
        self.asked: list[tuple[str, str, str]] = []

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], interface: str = "") -> Response:
        self.asked.append((url, headers["Authorization"], interface))
        offer = {"key": base64.b64encode(KEY).decode(), "port": self.port, "interval": 0.25}
        return Response(self.status, {}, json.dumps(offer).encode())

    async def get(self, url: str, interface: str = "") -> Response:  # pragma: no cover - not used
        raise RetryableDelivery(url, "not used")

    async def aclose(self) -> None:
        return None


def assessment(**changes: object) -> Assessment:
    fields: dict[str, object] = {
        "at": 1_800_000_000.0,
        "position": "12",
        "layers": (),
        "verdict": "healthy",
        "verdict_layer": "none",
        "verdict_state": "ok",
        "backup_ready": None,
        "backup_rtt": None,
        "backup_loss": None,
        "backup_reason": "",
        "on_backup": False,
        "risk": 0.0,
        "risk_band": "low",
        "time_to_loss": math.inf,
        "risk_reason": "",
        "vpn_inferred": False,
    } | changes
    return Assessment(**fields)  # type: ignore[arg-type]


def test_digest_of_an_assessment() -> None:
    healthy = digest_of(assessment())
    assert healthy == BeatDigest("none", "ok", 0.0, None, None, False)
    failing = digest_of(
        assessment(
            verdict_layer="internet",
            verdict_state="failed",
            risk=0.9,
            time_to_loss=4.0,
            backup_ready=False,
            on_backup=True,
        )
    )
    assert failing == BeatDigest("internet", "failed", 0.9, 4.0, False, True)
    # Before any data the model says "unknown": the beat must not claim "ok".
    assert digest_of(assessment(verdict_state="unknown")).state == "degraded"


def test_the_beat_carries_the_latest_assessment_converted_once() -> None:
    latest: list[Assessment] = []
    digest = LatestDigest(lambda: latest[-1] if latest else None)
    assert digest() is None  # before the first assessment there is nothing to say
    latest.append(assessment(verdict_layer="vpn", verdict_state="degraded"))
    first = digest()
    assert first == digest_of(latest[-1])
    assert digest() is first
    latest.append(assessment())
    assert digest() == BeatDigest("none", "ok", 0.0, None, None, False)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"nope", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"key": "***", "port": 1, "interval": 1}', "base64"),
        (b'{"key": "AAAA", "port": 1, "interval": 1}', "shorter"),
        (json.dumps({"key": base64.b64encode(KEY).decode(), "port": 0, "interval": 1}).encode(), "port"),
        (json.dumps({"key": base64.b64encode(KEY).decode(), "port": 9, "interval": 0}).encode(), "interval"),
    ],
)
def test_parse_offer_says_what_is_wrong(body: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_offer(body)


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="heartbeat") as caught:
        parse(
            {
                "agent": {"id": "a"},
                "heartbeat": {"interval": "1ms", "copies": 0, "fallback_interval": "100ms", "enabled": "yes"},
            }
        )
    text = str(caught.value)
    for key in ("heartbeat.interval", "heartbeat.copies", "heartbeat.enabled"):
        assert key in text
    with pytest.raises(ValueError, match=r"heartbeat\.fallback_interval: must not be shorter than interval"):
        parse({"agent": {"id": "a"}, "heartbeat": {"interval": "500ms", "fallback_interval": "100ms"}})
    assert parse({"agent": {"id": "a"}}).heartbeat == HeartbeatSection()


def listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    return sock


def received(sock: socket.socket) -> list[bytes]:
    out: list[bytes] = []
    sock.setblocking(False)
    while True:
        try:
            out.append(sock.recv(2048))
        except BlockingIOError:
            return out


async def test_fallback_paths_rest_until_the_primary_path_is_down() -> None:
    sock = listener()
    port = sock.getsockname()[1]
    down = False
    clock = ManualClock()
    transport = OfferTransport(port)
    sender = Sender(
        HeartbeatSection(fallback_interval=1.0, copies=2),
        "pos-12",
        "boot1",
        "secret-token",
        [("http://127.0.0.1:1", False, True), ("http://127.0.0.1:2", True, True)],
        transport,
        clock,
        lambda: DIGEST,
        escalated=lambda: down,
    )
    try:
        await sender._refresh_offers(clock.monotonic())
        assert [asked[:2] for asked in transport.asked] == [
            ("http://127.0.0.1:1" + OFFER_PATH, "Bearer secret-token"),
            ("http://127.0.0.1:2" + OFFER_PATH, "Bearer secret-token"),
        ]
        targets = sender.targets()
        assert [(t.path, t.primary) for t in targets] == [("tunnel", True), ("public", False)]
        sent = []
        for _beat in range(8):  # two seconds at 250 ms
            sent.append(sender.beat(targets, clock.monotonic()))
            clock.mono += 0.25
        # The primary path every beat (two copies), the public endpoint once a second.
        assert sent == [4, 2, 2, 2, 4, 2, 2, 2]
        down = True
        assert sender.beat(targets, clock.monotonic()) == 4
        datagrams = received(sock)
        assert len(datagrams) == sum(sent) + 4
        assert all(verify(d, KEY) for d in datagrams)
        beats = [decode(d) for d in datagrams]
        counters = [b.counter for b in beats]
        assert counters == sorted(set(counters))  # every datagram its own counter
        assert {b.path for b in beats} == {"tunnel", "public"}
        assert all(b.interval == 0.25 and b.agent_id == "pos-12" for b in beats)
        assert sender.send_errors == 0
        assert sender.status() == {
            "interval": 0.25,
            "endpoints": [
                {"endpoint": "http://127.0.0.1:1", "port": port, "offered": True},
                {"endpoint": "http://127.0.0.1:2", "port": port, "offered": True},
            ],
            "sent": sum(sent) + 4,
            "send_errors": 0,
        }
    finally:
        sender.close()
        sock.close()


async def test_no_beats_without_a_digest_or_an_offer() -> None:
    sock = listener()
    clock = ManualClock()
    transport = OfferTransport(sock.getsockname()[1], status=404)
    sender = Sender(
        HeartbeatSection(),
        "pos-12",
        "boot1",
        "t",
        [("http://127.0.0.1:1", False, True)],
        transport,
        clock,
        lambda: None,
    )
    try:
        await sender._refresh_offers(clock.monotonic())
        assert sender.targets() == []  # an older collector: no key, no beats
        assert sender.endpoints[0].next_offer > clock.monotonic() + 60
    finally:
        sender.close()
        sock.close()


class AsgiTransport:
    """The agent's transport over a collector app served in-process (HTTP) — UDP stays real."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], interface: str = "") -> Response:
        resp = await self.client.post(url, content=body, headers=dict(headers))
        return Response(resp.status_code, resp.headers, resp.content)

    async def get(self, url: str, interface: str = "") -> Response:  # pragma: no cover - not used
        raise RetryableDelivery(url, "not used")

    async def aclose(self) -> None:
        return None


async def test_beats_from_the_sender_update_the_collectors_view(tmp_path: Path) -> None:
    config = parse_collector(
        {"store": {"path": str(tmp_path / "c.db")}, "heartbeat": {"listen": "127.0.0.1:0"}}
    )
    app = create_app(config, ticker=False)
    service: Collector = app.state.collector
    token = service.store.add_agent("pos-12", site="north", position="12", now_ms=1)
    await service.start(ticker=False)
    stop = asyncio.Event()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as client:
            unauthorized = await client.post("/api/v1/heartbeat", headers={"Authorization": "Bearer nope"})
            assert unauthorized.status_code == 401
            sender = Sender(
                HeartbeatSection(interval=0.05),
                "pos-12",
                "boot1",
                token,
                [("http://127.0.0.1:8", False, False)],  # the UDP host; HTTP goes in-process
                AsgiTransport(client),
                SystemClock(),
                lambda: BeatDigest("vpn", "failed", 0.7, 9.0, True, False),
            )
            running = asyncio.create_task(sender.run(stop))
            for _ in range(200):  # the agent appears in the fleet view when it asks for its key
                view = service.fleet.agents.get("pos-12")
                if view is not None and service.heartbeats.receiver.counts["ok"] >= 3:
                    break
                await asyncio.sleep(0.02)
            stop.set()
            await running
    finally:
        await service.stop()
    assert view is not None
    assert view.last_beat is not None
    assert view.beat == BeatDigest("vpn", "failed", 0.7, 9.0, True, False)
    assert set(view.beat_paths) == {"tunnel"}
    assert view.beat_interval == 0.05
    counts = service.heartbeats.receiver.counts
    assert counts["ok"] >= 3
    assert counts["bad_mac"] == counts["replay"] == counts["malformed"] == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="binding to an interface needs CAP_NET_RAW")
async def test_a_missing_backup_interface_is_tried_again_on_later_beats() -> None:
    sock = listener()
    clock = ManualClock()
    sender = Sender(
        HeartbeatSection(fallback_interval=0.25),
        "pos-12",
        "boot1",
        "t",
        [("http://127.0.0.1:1", False, True)],
        OfferTransport(sock.getsockname()[1]),
        clock,
        lambda: DIGEST,
        backup_interface=lambda: "nosuch0",  # configured, but the hotspot is unplugged
    )
    try:
        await sender._refresh_offers(clock.monotonic())
        targets = sender.targets()
        assert [t.path for t in targets] == ["tunnel", "backup"]
        assert sender.beat(targets, clock.monotonic()) == 1  # the tunnel only
        assert (socket.AF_INET, "nosuch0") not in sender._sockets  # not given up on
        assert [decode(d).path for d in received(sock)] == ["tunnel"]
    finally:
        sender.close()
        sock.close()


async def test_a_stop_on_purpose_signs_off_over_every_path() -> None:
    sock = listener()
    port = sock.getsockname()[1]
    clock = ManualClock()
    sender = Sender(
        HeartbeatSection(fallback_interval=1.0),
        "pos-12",
        "boot1",
        "secret-token",
        [("http://127.0.0.1:1", False, True), ("http://127.0.0.1:2", True, True)],
        OfferTransport(port),
        clock,
        lambda: DIGEST,
    )
    try:
        await sender._refresh_offers(clock.monotonic())
        assert sender.beat(sender.targets(), clock.monotonic()) == 2  # a beat: tunnel and public
        stop = asyncio.Event()
        stop.set()
        await sender.run(stop)  # stops at once, and signs off on the way out
        beats = [decode(d) for d in received(sock)]
        last = [b for b in beats if b.signing_off]
        # Twice per path (one may be lost), each its own counter, after every ordinary beat.
        assert sorted(b.path for b in last) == ["public", "public", "tunnel", "tunnel"]
        assert len({b.counter for b in last}) == 4
        assert min(b.counter for b in last) > max(b.counter for b in beats if not b.signing_off)
    finally:
        sender.close()
        sock.close()
