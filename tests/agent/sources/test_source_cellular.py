"""Cellular from recorded ``mmcli -K`` outputs and ModemManager D-Bus objects (busctl JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lifeline_agent.errors import SourceParseError
from lifeline_agent.sources.base import FixtureFile
from lifeline_agent.sources.cellular import (
    CellularFacts,
    CellularSource,
    FixtureBackend,
    access_technologies_from_mask,
    cellular_from_mmcli,
    generation,
    parse_managed_objects,
    parse_mmcli_keyvalues,
)


def _kv(fixtures: Path, name: str) -> dict[str, str]:
    return parse_mmcli_keyvalues((fixtures / name).read_text())


def test_mmcli_keyvalues_drop_empty_values(fixtures: Path) -> None:
    kv = _kv(fixtures, "mmcli_signal_lte.txt")
    assert kv["modem.signal.lte.rsrp"] == "-104.00"
    assert "modem.signal.5g.rsrp" not in kv  # "--"
    assert _kv(fixtures, "mmcli_list.txt")["modem-list.value[1]"] == "/org/freedesktop/ModemManager1/Modem/0"


def test_mmcli_lte_modem(fixtures: Path) -> None:
    facts = cellular_from_mmcli(_kv(fixtures, "mmcli_modem_lte.txt"), _kv(fixtures, "mmcli_signal_lte.txt"))
    assert facts == CellularFacts(
        modem="0",
        state="connected",
        connected=True,
        access_technology="lte",
        signal_quality=0.67,
        rsrp=-104.0,
        rsrq=-16.0,
        sinr=6.4,
        backend="mmcli",
    )


def test_mmcli_5g_prefers_nr_values(fixtures: Path) -> None:
    facts = cellular_from_mmcli(_kv(fixtures, "mmcli_modem_5g.txt"), _kv(fixtures, "mmcli_signal_5g.txt"))
    assert (facts.modem, facts.access_technology) == ("1", "5g")
    assert (facts.rsrp, facts.rsrq, facts.sinr) == (-88.0, -11.0, 19.5)


def test_older_mmcli_comma_list_and_no_signal_setup(fixtures: Path) -> None:
    facts = cellular_from_mmcli(_kv(fixtures, "mmcli_modem_searching_old.txt"), {})
    assert (facts.state, facts.connected, facts.access_technology) == ("searching", False, "3g")
    assert facts.signal_quality == pytest.approx(0.12)
    assert facts.rsrp is None
    assert facts.sinr is None


@pytest.mark.parametrize(
    ("text", "where"),
    [("modem.generic.state connected\n", "mmcli line 1"), ("a : 1\nkey with space : x\n", "mmcli line 2")],
)
def test_mmcli_bad_lines_are_named(text: str, where: str) -> None:
    with pytest.raises(SourceParseError, match=where):
        parse_mmcli_keyvalues(text)


def test_mmcli_output_that_is_not_a_modem() -> None:
    with pytest.raises(SourceParseError, match=r"modem\.dbus-path"):
        cellular_from_mmcli({"modem.generic.state": "connected"}, {})


def test_access_technology_bits() -> None:
    assert access_technologies_from_mask(1 << 14) == ("lte",)
    assert access_technologies_from_mask((1 << 14) | (1 << 15)) == ("lte", "5gnr")
    assert generation(access_technologies_from_mask((1 << 14) | (1 << 15))) == "5g"
    assert generation(access_technologies_from_mask(1 << 5 | 1 << 8)) == "3g"
    assert generation(()) == "unknown"


def test_dbus_managed_objects(fixtures: Path) -> None:
    modems = parse_managed_objects(json.loads((fixtures / "busctl_managed_objects.json").read_text()))
    assert [m.modem for m in modems] == ["0", "3"]  # the SIM object is not a modem
    nr, searching = modems
    assert nr == CellularFacts(
        modem="0",
        state="connected",
        connected=True,
        access_technology="5g",
        signal_quality=0.74,
        rsrp=-101.0,
        rsrq=-12.0,
        sinr=8.5,
        backend="modemmanager",
    )
    assert (searching.state, searching.connected, searching.access_technology) == (
        "searching",
        False,
        "unknown",
    )
    assert searching.rsrp is None


def test_dbus_reply_of_the_wrong_shape() -> None:
    with pytest.raises(SourceParseError, match="GetManagedObjects"):
        parse_managed_objects({"type": "s", "data": "x"})


def test_source_samples_and_change_events(tmp_path: Path) -> None:
    path = tmp_path / "scenario.jsonl"
    path.write_text(
        '{"ts_ms": 1000, "cellular": {"state": "connected", "access_technology": "lte", "signal_quality": 0.5,'
        ' "rsrp_dbm": -108, "rsrq_db": -17, "sinr_db": 2.5}}\n'
    )
    source = CellularSource([FixtureBackend(FixtureFile(str(path)))])
    first = source.read()
    assert first.ok
    assert first.events == ()
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in first.samples}
    assert values == {
        ("lifeline_cellular_signal_quality_ratio", (("access_technology", "lte"), ("modem", "0"))): 0.5,
        ("lifeline_cellular_rsrp_dbm", (("modem", "0"),)): -108.0,
        ("lifeline_cellular_rsrq_db", (("modem", "0"),)): -17.0,
        ("lifeline_cellular_sinr_db", (("modem", "0"),)): 2.5,
        ("lifeline_cellular_connected", (("modem", "0"),)): 1.0,
    }
    with path.open("a") as fh:
        fh.write('{"ts_ms": 2000, "cellular": {"state": "searching", "access_technology": "umts"}}\n')
    second = source.read()
    assert [e.type for e in second.events] == ["cellular.changed"]
    assert second.events[0].attributes["was_access_technology"] == "lte"
    assert ("lifeline_cellular_connected", 0.0) in {(s.name, s.value) for s in second.samples}


def test_fixture_with_an_unknown_technology_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "scenario.jsonl"
    path.write_text('{"ts_ms": 1000, "cellular": {"access_technology": "6g"}}\n')
    reading = CellularSource([FixtureBackend(FixtureFile(str(path)))]).read()
    assert not reading.ok
    assert "access_technology" in reading.error
