"""The heartbeat datagram: round trips, authentication, and errors that name the field."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifeline_wire import BeatDigest, BeatError, Heartbeat, WireError
from lifeline_wire.heartbeat import MAC_SIZE, MAX_SIZE, decode, encode, peek_agent, stamp, verify

KEY = bytes(range(32))
OTHER = bytes(32)
DIGEST = BeatDigest("internet", "failed", 0.75, 12.5, False, True)
BEAT = Heartbeat("pos-12", "b0a1c2d3e4f50617", 42, 1_763_700_000_123, "backup", 0.25, DIGEST)


def test_round_trip_keeps_every_field() -> None:
    data = encode(BEAT, KEY)
    assert len(data) < 110  # one small datagram, far below any MTU
    assert verify(data, KEY)
    assert peek_agent(data) == "pos-12"
    assert decode(data) == BEAT
    goodbye = dataclasses.replace(BEAT, signing_off=True)
    assert decode(encode(goodbye, KEY)) == goodbye


@pytest.mark.parametrize(
    "digest",
    [
        BeatDigest("none", "ok", 0.0, None, None, False),
        BeatDigest("cad", "degraded", 1.0, 0.0, True, False),
        BeatDigest("backup", "ok", 0.3333, 4_000_000.0, None, True),
    ],
)
def test_digest_round_trip(digest: BeatDigest) -> None:
    beat = Heartbeat("a", "b", 0, 0, "tunnel", 1.0, digest)
    back = decode(encode(beat, KEY)).digest
    assert (back.layer, back.state, back.backup_ready, back.on_backup) == (
        digest.layer,
        digest.state,
        digest.backup_ready,
        digest.on_backup,
    )
    assert back.risk == pytest.approx(digest.risk, abs=1e-4)
    if digest.time_to_loss is None:
        assert back.time_to_loss is None
    else:
        assert back.time_to_loss == pytest.approx(digest.time_to_loss, abs=1e-3)


def test_another_agents_key_does_not_verify() -> None:
    data = encode(BEAT, KEY)
    assert not verify(data, OTHER)


def test_any_flipped_bit_fails_verification() -> None:
    data = encode(BEAT, KEY)
    for index in range(len(data)):
        tampered = bytearray(data)
        tampered[index] ^= 0x01
        assert not verify(bytes(tampered), KEY), index


def test_no_token_or_key_travels() -> None:
    data = encode(BEAT, KEY)
    assert KEY not in data
    assert KEY[:MAC_SIZE] not in data


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"path": "wifi"}, "beat.path"),
        ({"agent_id": "bad id"}, "beat.agent_id"),
        ({"boot_id": ""}, "beat.boot_id"),
        ({"counter": -1}, "beat.counter"),
        ({"interval": 0.0}, "beat.interval"),
        ({"digest": BeatDigest("Internet!", "ok", 0.0, None, None, False)}, "beat.layer"),
        ({"digest": BeatDigest("cad", "unknown", 0.0, None, None, False)}, "beat.state"),
    ],
)
def test_encode_names_the_bad_field(change: dict[str, object], field: str) -> None:
    fields = {
        "agent_id": BEAT.agent_id,
        "boot_id": BEAT.boot_id,
        "counter": BEAT.counter,
        "sent_ms": BEAT.sent_ms,
        "path": BEAT.path,
        "interval": BEAT.interval,
        "digest": BEAT.digest,
    } | change
    with pytest.raises(BeatError) as caught:
        encode(Heartbeat(**fields), KEY)  # type: ignore[arg-type]
    assert caught.value.path == field
    assert isinstance(caught.value, WireError)


@pytest.mark.parametrize(
    ("mangle", "field"),
    [
        (lambda d: d[:10], "beat.length"),
        (lambda d: b"XX" + d[2:], "beat.magic"),
        (lambda d: d[:2] + b"\x09" + d[3:], "beat.version"),
        (lambda d: d[:3] + b"\x07" + d[4:], "beat.path"),
        (lambda d: d[:4] + b"\xf0" + d[5:], "beat.flags"),
        (lambda d: d[:31] + b"\x05" + d[32:], "beat.state"),
        (lambda d: d[:32] + b"\x3f" + d[33:], "beat.agent_id"),
        (lambda d: d[:-MAC_SIZE] + b"x" + d[-MAC_SIZE:], "beat.length"),
        (lambda d: d + bytes(MAX_SIZE), "beat.length"),
    ],
)
def test_decode_names_the_bad_field(mangle: object, field: str) -> None:
    data = mangle(encode(BEAT, KEY))  # type: ignore[operator]
    with pytest.raises(BeatError) as caught:
        decode(data)
    assert caught.value.path == field


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_beat_errors(data: bytes) -> None:
    with contextlib.suppress(BeatError):
        decode(data)
    assert verify(data, KEY) in (True, False)


def test_stamp_is_encode_with_a_new_counter_and_send_time() -> None:
    frame = bytearray(encode(BEAT, KEY)[:-MAC_SIZE])
    later = Heartbeat(BEAT.agent_id, BEAT.boot_id, 43, BEAT.sent_ms + 250, "backup", 0.25, DIGEST)
    assert stamp(frame, 43, BEAT.sent_ms + 250, KEY) == encode(later, KEY)
