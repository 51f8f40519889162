"""Default gateways from the kernel's route table become router targets."""

from __future__ import annotations

from pathlib import Path

from lifeline_agent.clock import SystemClock
from lifeline_agent.config import AgentConfig, parse
from lifeline_agent.discovery import (
    Discovery,
    discover,
    parse_proc_route,
    read_default_gateways,
    target_name,
)
from lifeline_agent.probes.runner import ProbeRunner
from lifeline_agent.probes.scheduler import Scheduler
from lifeline_agent.recorder import Recorder

# A laptop with home broadband on eth0 (metric 100) and a phone tether on usb0 (metric 600).
PROC_NET_ROUTE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
usb0\t00000000\t012BA8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
wg0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0
eth1\t00000000\t0102A8C0\t0002\t0\t0\t50\t00000000\t0\t0\t0
"""


def test_parse_finds_default_gateways_lowest_metric_first() -> None:
    gateways = parse_proc_route(PROC_NET_ROUTE)
    # eth1's route is not RTF_UP; non-default routes are ignored.
    assert [(g.interface, g.address, g.metric) for g in gateways] == [
        ("eth0", "192.168.1.1", 100),
        ("usb0", "192.168.43.1", 600),
    ]


def test_gateways_become_bound_router_targets(tmp_path: Path) -> None:
    route_file = tmp_path / "route"
    route_file.write_text(PROC_NET_ROUTE)
    config = parse({"agent": {"id": "ws-1"}, "schedule": {"default_interval": "2s"}})
    targets = discover(config, str(route_file))
    assert [(t.name, t.role, t.kind, t.host, t.path, t.interface, t.discovered) for t in targets] == [
        ("gw-eth0", "router", "icmp", "192.168.1.1", "primary", "eth0", True),
        ("gw-usb0", "router", "icmp", "192.168.43.1", "backup", "usb0", True),
    ]
    assert all(t.interval == 2.0 for t in targets)


def test_configured_name_wins_and_discovery_can_be_off(tmp_path: Path) -> None:
    route_file = tmp_path / "route"
    route_file.write_text(PROC_NET_ROUTE)
    mine = {"name": "gw-eth0", "role": "router", "host": "192.168.1.1"}
    config = parse({"agent": {"id": "ws-1"}, "targets": [mine]})
    assert [t.name for t in discover(config, str(route_file))] == ["gw-usb0"]
    off = parse({"agent": {"id": "ws-1"}, "discovery": {"default_gateways": False}})
    assert discover(off, str(route_file)) == ()


def test_names_are_valid_ids_and_missing_file_is_empty(tmp_path: Path) -> None:
    assert target_name("wlp0s20f3") == "gw-wlp0s20f3"
    assert target_name("eth0:1@x") == "gw-eth0_1_x"
    assert read_default_gateways(str(tmp_path / "absent")) == []


def test_reads_this_machines_table() -> None:
    text = Path("/proc/net/route").read_text()
    assert read_default_gateways() == parse_proc_route(text)


def _cad_config() -> AgentConfig:
    return parse(
        {
            "agent": {"id": "ws-1"},
            "discovery": {"default_gateways": False},
            "targets": [{"name": "cad", "role": "cad", "kind": "tcp", "host": "127.0.0.1", "port": 443}],
        }
    )


def test_a_target_no_probe_can_run_is_set_aside_not_probed() -> None:
    discovery = Discovery(_cad_config(), None, probe_kinds={"icmp"})
    assert discovery.targets == ()
    assert [t.name for t in discovery.skipped] == ["cad"]


def test_rediscovery_follows_the_vpn_endpoints_into_the_scheduler() -> None:
    discovery = Discovery(_cad_config(), None, probe_kinds={"icmp", "tcp"})
    recorder = Recorder(SystemClock())
    scheduler = Scheduler(discovery.targets, ProbeRunner(recorder))
    forgotten: list[str] = []
    assert discovery.saw_vpn_endpoints(("203.0.113.10",))
    assert not discovery.saw_vpn_endpoints(("203.0.113.10",))  # no change: nothing to rediscover
    discovery.rediscover(scheduler, recorder, forgotten.append)
    primary = [(t.role, t.host) for t in discovery.targets if t.path != "backup"]
    assert primary == [("cad", "127.0.0.1"), ("vpn", "203.0.113.10")]
    assert scheduler.targets == discovery.targets
    _samples, events = recorder.drain()
    assert [e.type for e in events] == ["discovery.targets_changed"]
    assert discovery.saw_vpn_endpoints(())
    discovery.rediscover(scheduler, recorder, forgotten.append)
    assert [t.name for t in scheduler.targets] == ["cad"]
    assert forgotten
    assert all(name.startswith("vpn-") for name in forgotten)


def test_targets_given_by_the_caller_are_never_rediscovered() -> None:
    config = _cad_config()
    assert not Discovery(config, config.targets, probe_kinds={"tcp"}).enabled
