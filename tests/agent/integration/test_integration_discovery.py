"""Discovery: VPN concentrators on both paths, configured backup targets bound to the backup."""

from __future__ import annotations

from pathlib import Path

from lifeline_agent.config import AgentConfig, parse
from lifeline_agent.discovery import all_targets, backup_interface, parse_proc_route

# eth0 (metric 100) is the home broadband, usb0 (metric 600) the phone's hotspot.
PROC_ROUTE = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
usb0\t00000000\t012BA8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
wg0\t0000140A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
"""


def config(**extra: object) -> AgentConfig:
    return parse(
        {
            "agent": {"id": "ws-1"},
            "targets": [
                {"name": "cad", "role": "cad", "kind": "tcp", "host": "10.20.0.10", "port": 443},
                {"name": "hub-backup", "role": "vpn", "host": "203.0.113.99", "path": "backup"},
            ],
            **extra,
        }
    )


def test_vpn_endpoints_become_primary_and_backup_targets(tmp_path: Path) -> None:
    route = tmp_path / "route"
    route.write_text(PROC_ROUTE)
    cfg = config()
    targets = {t.name: t for t in all_targets(cfg, str(route), vpn_endpoints=("203.0.113.10",))}
    assert set(targets) == {
        "cad",
        "hub-backup",
        "gw-eth0",
        "gw-usb0",
        "vpn-203.0.113.10",
        "vpn-203.0.113.10-backup",
    }
    primary, backup = targets["vpn-203.0.113.10"], targets["vpn-203.0.113.10-backup"]
    assert (primary.role, primary.path, primary.interface, primary.discovered) == ("vpn", "primary", "", True)
    assert (backup.role, backup.path, backup.interface, backup.host) == (
        "vpn",
        "backup",
        "usb0",
        "203.0.113.10",
    )
    # A configured backup-path target without an interface would follow the primary route.
    assert targets["hub-backup"].interface == "usb0"
    assert targets["cad"].interface == ""


def test_without_a_second_default_route_there_is_no_backup_target(tmp_path: Path) -> None:
    route = tmp_path / "route"
    route.write_text("\n".join(PROC_ROUTE.splitlines()[:2]) + "\n")
    targets = {t.name for t in all_targets(config(), str(route), vpn_endpoints=("203.0.113.10",))}
    assert "vpn-203.0.113.10" in targets
    assert "vpn-203.0.113.10-backup" not in targets


def test_the_configured_backup_interface_wins_and_endpoints_already_configured_are_left_alone() -> None:
    gateways = parse_proc_route(PROC_ROUTE)
    cfg = config(collector={"backup_interface": "wwan0"})
    assert backup_interface(cfg, gateways) == "wwan0"
    assert backup_interface(config(), gateways[:1]) == ""
    names = {t.name for t in all_targets(cfg, "/nonexistent", vpn_endpoints=("203.0.113.99",))}
    # hub-backup already probes 203.0.113.99 over the backup: only the primary one is added.
    assert "vpn-203.0.113.99" in names
    assert "vpn-203.0.113.99-backup" not in names
