"""WireGuard replies (uapi socket and kernel netlink) parsed without ever keeping a key."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lifeline_agent.errors import SourceParseError, SourceReadError, SourceUnavailable
from lifeline_agent.sources.wireguard import (
    WgDevice,
    WgPeer,
    _safe_copy,
    parse_netlink_device,
    parse_uapi,
    uapi_get,
)

# Every secret in the recorded replies: none may survive parsing.
UAPI_SECRETS = (
    "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a",  # private_key
    "188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52",  # preshared_key
    "a0f3c8e1b7d2946f5e3a1c0b9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e",  # private_key (never file)
)
NETLINK_SECRETS = (
    "6EtabScXwQA6E7QxVwNT26ypFGzxUMX4V1aA/rpSAno=",
    "GIUVCT6VL18i6GXO8wEucvi18LWYrAMJ1drM47cPz1I=",
)


def test_uapi_reply_two_peers(fixtures: Path) -> None:
    device = parse_uapi((fixtures / "wg_uapi_get_two_peers.txt").read_text())
    assert device == WgDevice(
        listen_port=51820,
        peers=(
            WgPeer("203.0.113.10:51820", 1717000000.25, 1929999999, 1212111, 25),
            WgPeer("198.51.100.7:51820", 1716999000.0, 2224, 38333, 0),
        ),
    )
    assert device.latest == device.peers[0]
    assert (device.rx_bytes, device.tx_bytes) == (1929999999 + 2224, 1212111 + 38333)
    for secret in UAPI_SECRETS:
        assert secret not in repr(device)


def test_uapi_reply_never_handshaked(fixtures: Path) -> None:
    device = parse_uapi((fixtures / "wg_uapi_get_never.txt").read_text())
    assert device.latest is not None
    assert device.latest.last_handshake is None
    assert UAPI_SECRETS[2] not in repr(device)


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("listen_port=1\n", SourceParseError, "without errno"),
        ("errno=22\n\n", SourceReadError, "errno=22"),
        ("listen_port=one\nerrno=0\n\n", SourceParseError, "uapi line 1: listen_port is not an integer"),
        ("private_key=00\ngarbage\nerrno=0\n\n", SourceParseError, "uapi line 2: expected key=value"),
    ],
)
def test_uapi_errors(text: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_uapi(text)


def test_uapi_parse_error_never_echoes_a_secret() -> None:
    # A private key with a broken separator is skipped by name before anything is checked.
    with pytest.raises(SourceParseError) as info:
        parse_uapi("private_key=" + UAPI_SECRETS[0] + "\npublic_key=ab\nrx_bytes=x\nerrno=0\n\n")
    assert UAPI_SECRETS[0] not in str(info.value)


def test_uapi_get_over_a_real_socket(
    tmp_path: Path, fixtures: Path, uapi_server: Callable[[str, bytes], Any]
) -> None:
    path = str(tmp_path / "wg9.sock")
    server = uapi_server(path, (fixtures / "wg_uapi_get_two_peers.txt").read_bytes())
    device = uapi_get(path, timeout=5.0)
    assert server.requests == [b"get=1\n\n"]
    assert device.listen_port == 51820
    assert len(device.peers) == 2
    for secret in UAPI_SECRETS:
        assert secret not in repr(device)


def test_uapi_socket_missing(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="missing"):
        uapi_get(str(tmp_path / "wg0.sock"))


def test_netlink_device_reply(fixtures: Path) -> None:
    data = json.loads((fixtures / "wg_netlink_device.json").read_text())
    device = parse_netlink_device([data])
    assert device.listen_port == 51820
    assert device.peers == (
        WgPeer("203.0.113.10:51820", 1717000100.5, 774411, 99120, 25),
        WgPeer("[2001:db8::10]:51820", None, 0, 148, 0),
    )
    for secret in NETLINK_SECRETS:
        assert secret not in repr(device)


def test_kernel_adapter_copies_no_key_out_of_pyroute2() -> None:
    from pyroute2.netlink.generic.wireguard import wgmsg

    private = base64.b64encode(b"\x11" * 32)
    preshared = base64.b64encode(b"\x22" * 32)
    msg = wgmsg()
    msg["cmd"] = 0
    msg["version"] = 1
    msg["attrs"] = [
        ["WGDEVICE_A_IFNAME", "wg0"],
        ["WGDEVICE_A_PRIVATE_KEY", {"value": private}],
        ["WGDEVICE_A_LISTEN_PORT", 51820],
        [
            "WGDEVICE_A_PEERS",
            [
                {
                    "attrs": [
                        ["WGPEER_A_PUBLIC_KEY", {"value": base64.b64encode(b"\x33" * 32)}],
                        ["WGPEER_A_PRESHARED_KEY", {"value": preshared}],
                        ["WGPEER_A_ENDPOINT", {"addr": "203.0.113.10", "port": 51820}],
                        ["WGPEER_A_LAST_HANDSHAKE_TIME", {"tv_sec": 1717000000, "tv_nsec": 0}],
                        ["WGPEER_A_RX_BYTES", 10],
                        ["WGPEER_A_TX_BYTES", 20],
                    ]
                }
            ],
        ],
    ]
    msg.encode()
    received = wgmsg(msg.data)  # what the kernel's bytes decode into
    received.decode()
    assert received.get_attr("WGDEVICE_A_PRIVATE_KEY") is not None  # the key really is in the reply
    plain = _safe_copy(received)
    device = parse_netlink_device([plain])
    assert device.peers == (WgPeer("203.0.113.10:51820", 1717000000.0, 10, 20, 0),)
    for text in (repr(plain), repr(device)):
        assert private.decode() not in text
        assert preshared.decode() not in text
        assert "PRIVATE" not in text
        assert "PRESHARED" not in text


def test_pyroute2_debug_logging_is_held_back() -> None:
    # pyroute2 would log decoded WireGuard messages (with the private key) at DEBUG.
    assert not logging.getLogger("pyroute2.netlink.core").isEnabledFor(logging.DEBUG)
