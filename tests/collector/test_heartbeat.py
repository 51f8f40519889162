"""The heartbeat receiver: keys, forgery, replays, boots, limits, and the fleet fields it updates."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import stat
import time
from pathlib import Path

import pytest
from collector_kit import make_config, serving
from hypothesis import given, settings
from hypothesis import strategies as st

from lifeline_collector.app import create_app
from lifeline_collector.clock import ManualClock
from lifeline_collector.config import parse
from lifeline_collector.fleet import AgentView, Fleet
from lifeline_collector.heartbeat import (
    BeatReceiver,
    HeartbeatConfig,
    HeartbeatServer,
    agent_key,
    keys_for,
    load_master_secret,
    secret_path,
)
from lifeline_collector.store import Store, hash_token
from lifeline_wire import BeatDigest, Heartbeat
from lifeline_wire.heartbeat import encode

T0 = 1_800_000_000.0
MASTER = bytes(range(32))
DIGEST = BeatDigest("none", "ok", 0.05, None, True, False)


def beat(
    counter: int,
    *,
    agent: str = "pos-12",
    boot: str = "boot1",
    path: str = "tunnel",
    sent: float = T0,
    digest: BeatDigest = DIGEST,
    signing_off: bool = False,
) -> Heartbeat:
    return Heartbeat(agent, boot, counter, round(sent * 1000), path, 0.25, digest, signing_off=signing_off)


class Harness:
    def __init__(self, *agents: str, clock: ManualClock | None = None) -> None:
        self.clock = clock or ManualClock(T0)
        self.fleet = Fleet()
        self.heard: list[str] = []
        for agent in agents:
            self.fleet.agents[agent] = AgentView(agent)
        self.receiver = BeatReceiver(self.fleet, self.clock, self.heard.append)
        self.receiver.set_keys(keys_for(MASTER, [(a, f"hash-{a}") for a in agents]))

    def key(self, agent: str) -> bytes:
        return agent_key(MASTER, agent, f"hash-{agent}")

    def send(self, hb: Heartbeat, key: bytes | None = None, source: str = "10.0.0.2") -> str:
        return self.receiver.handle(encode(hb, key or self.key(hb.agent_id)), source)


def test_valid_beat_updates_the_view_and_reports_heard() -> None:
    h = Harness("pos-12")
    assert h.send(beat(1, path="backup", digest=BeatDigest("vpn", "failed", 0.9, 3.0, False, True))) == "ok"
    view = h.fleet.agents["pos-12"]
    assert view.last_beat == T0
    assert view.beat_paths == {"backup": T0}
    assert view.beat_interval == 0.25
    assert view.beat == BeatDigest("vpn", "failed", 0.9, 3.0, False, True)
    assert view.last_heard == T0
    assert h.heard == ["pos-12"]


def test_heard_is_reported_after_a_gap_only() -> None:
    h = Harness("pos-12")
    for counter in range(1, 9):
        assert h.send(beat(counter, sent=h.clock.now())) == "ok"
        h.clock.advance(0.25)
    assert h.heard == ["pos-12"]  # beating steadily: once, for the first beat
    h.clock.advance(3.0)
    h.send(beat(20, sent=h.clock.now()))
    assert h.heard == ["pos-12", "pos-12"]


def test_paths_are_tracked_separately() -> None:
    h = Harness("pos-12")
    h.send(beat(1, path="tunnel"))
    h.clock.advance(1)
    h.send(beat(2, path="backup", sent=T0 + 1))
    assert h.fleet.agents["pos-12"].beat_paths == {"tunnel": T0, "backup": T0 + 1}
    assert h.receiver.paths == {"tunnel": 1, "backup": 1, "public": 0}


def test_another_agents_key_is_a_bad_mac() -> None:
    h = Harness("pos-12", "pos-13")
    forged = beat(1, agent="pos-12")
    assert h.send(forged, key=h.key("pos-13")) == "bad_mac"
    assert h.fleet.agents["pos-12"].last_beat is None
    assert h.receiver.counts["bad_mac"] == 1


def test_unknown_agent_is_counted() -> None:
    h = Harness("pos-12")
    assert h.send(beat(1, agent="ghost"), key=h.key("pos-12")) == "unknown_agent"
    assert h.receiver.counts["unknown_agent"] == 1


def test_replay_and_older_counters_are_rejected() -> None:
    h = Harness("pos-12")
    datagram = encode(beat(5), h.key("pos-12"))
    assert h.receiver.handle(datagram, "10.0.0.2") == "ok"
    assert h.receiver.handle(datagram, "10.0.0.2") == "replay"
    assert h.send(beat(4)) == "replay"
    assert h.send(beat(6)) == "ok"
    assert h.receiver.counts["replay"] == 2


def test_an_older_boot_is_not_accepted_after_a_newer_one() -> None:
    h = Harness("pos-12")
    old = [encode(beat(n, boot="old", sent=T0 + n / 10), h.key("pos-12")) for n in range(1, 4)]
    assert h.receiver.handle(old[0], "a") == "ok"
    assert h.send(beat(1, boot="new", sent=T0 + 1)) == "ok"  # the agent restarted
    assert h.receiver.handle(old[1], "a") == "replay"  # its earlier life, replayed
    assert h.receiver.handle(old[2], "a") == "replay"
    # A third boot whose clock reads earlier than the newest beat seen is not a restart either.
    assert h.send(beat(1, boot="third", sent=T0 + 0.5)) == "replay"


def test_the_decoded_digest_and_boot_follow_each_beat() -> None:
    h = Harness("pos-12")
    view = h.fleet.agents["pos-12"]
    assert h.send(beat(1, boot="a", sent=T0 - 3600)) == "stale"  # decoded, then refused
    assert h.send(beat(2, boot="a")) == "ok"  # same bytes but the send time: taken as boot "a"
    assert h.send(beat(3, boot="b", sent=T0 + 1)) == "ok"  # a restart
    assert h.send(beat(4, boot="a", sent=T0 + 2)) == "replay"  # "a" is over
    failing = BeatDigest("cad", "failed", 1.0, 0.0, False, False)
    assert h.send(beat(5, boot="b", sent=T0 + 1, digest=failing)) == "ok"
    assert view.beat == failing
    assert h.send(beat(6, boot="b", sent=T0 + 1)) == "ok"
    assert view.beat == DIGEST


def test_send_time_far_from_now_is_stale() -> None:
    h = Harness("pos-12")
    assert h.send(beat(1, sent=T0 - 3600)) == "stale"
    assert h.send(beat(2, sent=T0 + 3600)) == "stale"
    # The agent's known clock offset (from its batches) is allowed for.
    h.fleet.agents["pos-12"].clock_offset = 3600.0
    assert h.send(beat(3, sent=T0 + 3600)) == "ok"


def test_revoked_agents_key_is_gone() -> None:
    h = Harness("pos-12")
    h.receiver.set_keys({})
    assert h.send(beat(1)) == "unknown_agent"


def test_a_source_sending_rejects_is_cut_off_for_the_second() -> None:
    h = Harness("pos-12")
    h.receiver.source_rejects = 3
    junk = [h.receiver.handle(b"junk", "10.9.9.9") for _ in range(4)]
    assert junk == ["malformed", "malformed", "malformed", "rate_limited"]
    assert h.send(beat(1), source="10.9.9.9") == "rate_limited"  # unexamined, even a valid one
    assert h.send(beat(2), source="10.0.0.2") == "ok"  # another source is unaffected
    h.clock.advance(1.0)
    assert h.send(beat(3), source="10.9.9.9") == "ok"  # the next second


def test_valid_beats_from_one_address_are_never_limited() -> None:
    agents = [f"pos-{i}" for i in range(50)]
    h = Harness(*agents)
    h.receiver.source_rejects = 3
    results = {h.send(beat(n, agent=agent), source="192.0.2.1") for n in (1, 2, 3) for agent in agents}
    assert results == {"ok"}  # 150 beats from behind one NAT in one second


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=260), st.integers(0, 255), st.integers(0, 40))
def test_no_datagram_raises(noise: bytes, byte: int, where: int) -> None:
    h = Harness("pos-12")
    valid = bytearray(encode(beat(1), h.key("pos-12")))
    valid[where % len(valid)] = byte
    for data in (noise, bytes(valid), b"LB\x01" + noise, bytes(valid[: where + 1])):
        assert h.receiver.handle(data, "x") in h.receiver.counts


def test_key_follows_the_token(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "c.db"))
    try:
        first = store.add_agent("pos-12", now_ms=1)
        key1 = keys_for(MASTER, store.token_hashes())["pos-12"]
        assert key1 == agent_key(MASTER, "pos-12", hash_token(first))
        store.revoke_agent("pos-12", now_ms=2)
        assert "pos-12" not in keys_for(MASTER, store.token_hashes())
        second = store.add_agent("pos-12", now_ms=3)
        key2 = keys_for(MASTER, store.token_hashes())["pos-12"]
        assert key2 == agent_key(MASTER, "pos-12", hash_token(second))
        assert key2 != key1
        # A database alone does not give the key: it needs the master secret from outside it.
        assert agent_key(bytes(32), "pos-12", hash_token(second)) != key2
    finally:
        store.close()


def test_master_secret_is_created_private_and_reused(tmp_path: Path) -> None:
    config = HeartbeatConfig()
    path = secret_path(config, str(tmp_path / "collector.db"))
    assert path == str(tmp_path / "collector.db.heartbeat-secret")
    first = load_master_secret(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_master_secret(path) == first
    assert len(first) == 32
    Path(path).write_text("not hex\n")
    with pytest.raises(ValueError, match="hex"):
        load_master_secret(path)


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="heartbeat") as caught:
        parse({"heartbeat": {"listen": "nowhere", "interval": "1ms", "source_rejects": 0, "bogus": 1}})
    text = str(caught.value)
    for key in ("heartbeat.listen", "heartbeat.interval", "heartbeat.source_rejects", "heartbeat.bogus"):
        assert key in text


def test_server_feeds_the_receiver_over_a_real_socket() -> None:
    clock = ManualClock(time.time())
    h = Harness("pos-12", clock=clock)
    server = HeartbeatServer(h.receiver, "127.0.0.1", 0)
    server.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for counter in range(1, 4):
                sender.sendto(encode(beat(counter, sent=clock.now()), h.key("pos-12")), server.address)
            sender.sendto(b"garbage", server.address)
        deadline = time.monotonic() + 5
        while sum(h.receiver.counts.values()) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        server.stop()
    assert h.receiver.counts["ok"] == 3
    assert h.receiver.counts["malformed"] == 1
    assert h.fleet.agents["pos-12"].last_beat == clock.now()


@pytest.mark.anyio
async def test_outcomes_are_counted_on_metrics(tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path), ticker=False)
    service = app.state.collector
    async with serving(app) as client:
        token = service.store.add_agent("pos-12", now_ms=1)
        offer = await client.post("/api/v1/heartbeat", headers={"Authorization": f"Bearer {token}"})
        assert offer.status_code == 200
        assert offer.headers["Cache-Control"] == "no-store"
        assert token not in offer.text
        service.heartbeats.receiver.handle(b"junk", "10.1.1.1")
        text = (await client.get("/metrics")).text
    assert 'lifeline_collector_heartbeats_total{result="malformed"} 1.0' in text
    assert 'lifeline_collector_heartbeats_total{result="ok"} 0.0' in text
    assert 'lifeline_collector_heartbeat_paths_total{path="backup"} 0.0' in text


@pytest.mark.anyio
async def test_a_revoked_or_reissued_token_ends_the_old_key(tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path), ticker=False)
    service = app.state.collector
    async with serving(app) as client:
        token = service.store.add_agent("pos-12", now_ms=1)
        answer = await client.post("/api/v1/heartbeat", headers={"Authorization": f"Bearer {token}"})
        old_key = base64.b64decode(answer.json()["key"])
        receiver = service.heartbeats.receiver
        now = service.clock.now()
        assert receiver.handle(encode(beat(1, sent=now), old_key), "10.0.0.2") == "ok"
        # ``agents revoke`` / ``agents add`` are other processes: another connection to the store.
        with contextlib.closing(Store(str(tmp_path / "collector.db"))) as cli:
            cli.revoke_agent("pos-12", now_ms=2)
            service.tick()  # the collector follows the registry
            assert receiver.handle(encode(beat(2, sent=now), old_key), "10.0.0.2") == "unknown_agent"
            new_token = cli.add_agent("pos-12", now_ms=3)
        service.tick()
        assert receiver.handle(encode(beat(3, sent=now), old_key), "10.0.0.2") == "bad_mac"
        answer = await client.post("/api/v1/heartbeat", headers={"Authorization": f"Bearer {new_token}"})
        new_key = base64.b64decode(answer.json()["key"])
        assert new_key != old_key
        assert receiver.handle(encode(beat(4, sent=now), new_key), "10.0.0.2") == "ok"
        stale_token = await client.post("/api/v1/heartbeat", headers={"Authorization": f"Bearer {token}"})
        assert stale_token.status_code == 401


@pytest.mark.parametrize(
    ("sections", "listen"),
    [
        # Behind a TLS reverse proxy HTTP listens on loopback; the proxy does not carry UDP.
        ({}, "0.0.0.0:8480"),
        ({"server": {"listen": "localhost:9000"}}, "0.0.0.0:9000"),
        ({"server": {"listen": "10.20.0.1:9000"}}, "10.20.0.1:9000"),
        (
            {"server": {"listen": "10.20.0.1:9000"}, "heartbeat": {"listen": "127.0.0.1:7000"}},
            "127.0.0.1:7000",
        ),
    ],
)
def test_where_beats_are_received_by_default(sections: dict[str, dict[str, str]], listen: str) -> None:
    assert parse(sections).heartbeat.listen == listen


def test_a_beat_signing_off_marks_the_position_until_it_beats_again() -> None:
    h = Harness("pos-12")
    assert h.send(beat(1)) == "ok"
    view = h.fleet.agents["pos-12"]
    assert view.signed_off is None
    h.clock.advance(0.25)
    assert h.send(beat(2, signing_off=True)) == "ok"
    assert h.send(beat(3, signing_off=True)) == "ok"  # the second copy keeps the first time
    assert view.signed_off == T0 + 0.25
    h.clock.advance(60)
    assert h.send(beat(1, boot="boot2", sent=T0 + 60.25)) == "ok"  # started again
    assert view.signed_off is None
    assert h.send(beat(4, signing_off=True, sent=T0 + 60.25)) == "replay"  # the old boot cannot sign off
    assert view.signed_off is None
