"""Wi-Fi from recorded nl80211 station replies, /proc/net/wireless text and fixture files."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from lifeline_agent.errors import SourceParseError
from lifeline_agent.sources.base import FixtureFile
from lifeline_agent.sources.wifi import (
    FixtureBackend,
    Nl80211Backend,
    ProcBackend,
    WifiFacts,
    WifiSource,
    parse_proc_net_wireless,
    parse_station,
)


def _station(fixtures: Path, name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((fixtures / name).read_text())
    return data


def test_station_reply_gives_signal_bitrate_and_retries(fixtures: Path) -> None:
    facts = parse_station("wlan0", _station(fixtures, "nl80211_station_wlan0.json"))
    assert facts == WifiFacts(
        interface="wlan0",
        connected=True,
        signal_dbm=-58.0,
        bitrate_bps=866_700_000.0,  # BITRATE32 8667 × 100 kbit/s (VHT MCS 9, 2 streams, 80 MHz, short GI)
        retries=4213,
        backend="nl80211",
    )


def test_legacy_station_reply_falls_back_to_16bit_rate_and_average_signal(fixtures: Path) -> None:
    facts = parse_station("wlan1", _station(fixtures, "nl80211_station_legacy.json"))
    assert facts.signal_dbm == -79.0
    assert facts.bitrate_bps == 54_000_000.0
    assert facts.retries is None


def test_station_reply_without_sta_info_is_a_parse_error() -> None:
    with pytest.raises(SourceParseError, match="NL80211_ATTR_STA_INFO"):
        parse_station("wlan0", {"attrs": [["NL80211_ATTR_IFINDEX", 3]]})


def test_proc_net_wireless(fixtures: Path) -> None:
    found = parse_proc_net_wireless((fixtures / "proc_net_wireless.txt").read_text())
    assert found == [
        WifiFacts("wlp2s0", True, signal_dbm=-56.0, retries=12, backend="proc"),
        WifiFacts("wlan1", False, retries=0, backend="proc"),
    ]


def test_proc_net_wireless_bad_line_names_it() -> None:
    text = "h1\nh2\n wlan0: 0000 54. -56.\n"
    with pytest.raises(SourceParseError, match="/proc/net/wireless:3"):
        parse_proc_net_wireless(text)


def test_source_over_proc_backend_emits_catalog_samples(fixtures: Path) -> None:
    source = WifiSource([ProcBackend(str(fixtures / "proc_net_wireless.txt"))])
    assert source.available().ok
    reading = source.read()
    assert reading.ok
    assert reading.facts is not None
    assert reading.facts.interface == "wlp2s0"  # the associated one is chosen
    assert {(s.name, s.value) for s in reading.samples} == {
        ("lifeline_wifi_signal_dbm", -56.0),
        ("lifeline_wifi_retries_total", 12.0),
    }
    assert all(s.labels == {"interface": "wlp2s0"} for s in reading.samples)


def test_missing_proc_file_reads_as_error_not_healthy(tmp_path: Path) -> None:
    source = WifiSource([ProcBackend(str(tmp_path / "wireless"))])
    assert source.available().ok is False
    reading = source.read()
    assert not reading.ok
    assert "not present" in reading.error
    assert reading.samples == ()


def test_fixture_backend_and_association_events(tmp_path: Path) -> None:
    path = tmp_path / "scenario.jsonl"
    path.write_text(
        '{"ts_ms": 1000, "wifi": {"interface": "wlan0", "signal_dbm": -62, "bitrate_bps": 144400000}}\n'
    )
    source = WifiSource([FixtureBackend(FixtureFile(str(path)))])
    first = source.read()
    assert first.facts == WifiFacts("wlan0", True, -62.0, 144_400_000.0, None, "fixture")
    # The bit rate is exposed in Prometheus base units: bytes per second.
    assert ("lifeline_wifi_bitrate_bytes_per_second", 18_050_000.0) in {
        (s.name, s.value) for s in first.samples
    }
    assert first.events == ()
    with path.open("a") as fh:
        fh.write('{"ts_ms": 2000, "wifi": {"interface": "wlan0", "associated": false}}\n')
    second = source.read()
    assert second.facts is not None
    assert second.facts.connected is False
    assert [(e.type, e.attributes) for e in second.events] == [("wifi.disassociated", {"interface": "wlan0"})]
    assert second.samples == ()


def test_configured_interface_that_is_absent_is_an_error(fixtures: Path) -> None:
    source = WifiSource([ProcBackend(str(fixtures / "proc_net_wireless.txt"))], interface="wlan9")
    assert "wlan9 not found" in source.read().error


class RecordedIW:
    """Stands in for pyroute2 ``IW`` (no radio here): replays a recorded station reply of wlan0."""

    def __init__(self, station: dict[str, object], log: list[str]) -> None:
        self.station = station
        self.log = log
        self.fail_next = False
        self.closed = False

    def get_interfaces_dict(self) -> dict[str, list[object]]:
        self.log.append("interfaces")
        if self.fail_next:
            self.fail_next = False
            raise OSError(errno.ENODEV, "No such device")
        return {"wlan0": [3, "wlan0"]}

    def get_stations(self, index: int) -> list[RecordedMessage]:
        assert index == 3
        return [RecordedMessage(self.station)]

    def close(self) -> None:
        self.closed = True


class RecordedMessage:
    def __init__(self, data: dict[str, object]) -> None:
        self.data = data

    def dump(self) -> dict[str, object]:
        return self.data


def test_nl80211_keeps_one_socket_while_reads_succeed(fixtures: Path) -> None:
    log: list[str] = []
    opened: list[RecordedIW] = []

    def open_iw() -> RecordedIW:
        opened.append(RecordedIW(_station(fixtures, "nl80211_station_wlan0.json"), log))
        return opened[-1]

    backend = Nl80211Backend(open_iw)
    source = WifiSource([backend])
    assert source.available().ok
    readings = [source.read() for _ in range(3)]
    assert [r.facts.signal_dbm if r.facts else None for r in readings] == [-58.0, -58.0, -58.0]
    assert len(opened) == 1  # one socket for the check and every read
    assert log == ["interfaces"] * 4
    opened[0].fail_next = True  # the radio went away mid-read: the socket is dropped
    assert "nl80211: [Errno 19] No such device" in source.read().error
    assert opened[0].closed
    assert source.read().ok  # the next read opens a fresh one
    assert len(opened) == 2
    source.close()
    assert opened[1].closed


def test_nl80211_without_the_kernel_family_is_unavailable() -> None:
    def no_family() -> object:
        raise OSError(errno.ENOENT, "No such file or directory")

    availability = WifiSource([Nl80211Backend(no_family)]).available()
    assert not availability.ok
    assert "nl80211 not available" in availability.reason


def test_without_a_radio_nl80211_is_unavailable_before_pyroute2_is_asked(tmp_path: Path) -> None:
    from lifeline_agent.errors import SourceUnavailable
    from lifeline_agent.sources.wifi import _open_iw

    with pytest.raises(SourceUnavailable, match=r"no wireless interface \(no radio in .*\)"):
        _open_iw(str(tmp_path))  # cfg80211 loaded, no wiphy
    absent = str(tmp_path / "ieee80211")  # cfg80211 not loaded at all
    availability = WifiSource([Nl80211Backend(lambda: _open_iw(absent))]).available()
    assert not availability.ok
    assert availability.reason == f"nl80211: no wireless interface (no radio in {absent})"
