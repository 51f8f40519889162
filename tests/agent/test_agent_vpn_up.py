"""lifeline_vpn_up: judged from the probes that cross the tunnel, never from the interface alone."""

from __future__ import annotations

from lifeline_agent.clock import SystemClock
from lifeline_agent.config import Target
from lifeline_agent.probes.runner import ProbeRunner
from lifeline_agent.recorder import Recorder, series_key
from lifeline_agent.sources.vpn import Tunnel, VpnState
from lifeline_agent.vpn_up import record_vpn_up

CAD = Target(name="cad", role="cad", kind="tcp", host="10.20.0.5", port=443)
HOME = Target(name="gw", role="router", kind="icmp", host="192.168.1.1")
WG0 = series_key("lifeline_vpn_up", {"interface": "wg0", "vpn_type": "wireguard"})


def test_the_tunnel_carries_traffic_when_a_probe_through_it_answers() -> None:
    recorder = Recorder(SystemClock())
    runner = ProbeRunner(recorder)
    vpn = VpnState((Tunnel("wg0", "wireguard", link_up=True, up=True),))
    record_vpn_up(recorder, vpn, [CAD, HOME], runner.states, 1_000)
    assert WG0 not in recorder.latest()  # nothing has probed through the tunnel yet: no claim
    runner.state(CAD).up = True
    record_vpn_up(recorder, vpn, [CAD, HOME], runner.states, 2_000)
    assert recorder.latest()[WG0] == 1.0
    runner.state(CAD).up = False
    runner.state(HOME).up = True  # the home router answering says nothing about the tunnel
    record_vpn_up(recorder, vpn, [CAD, HOME], runner.states, 3_000)
    assert recorder.latest()[WG0] == 0.0


def test_a_tunnel_known_to_be_down_and_no_vpn_at_all_get_no_sample() -> None:
    recorder = Recorder(SystemClock())
    runner = ProbeRunner(recorder)
    runner.state(CAD).up = True
    down = VpnState((Tunnel("wg0", "wireguard", link_up=False, up=False),))
    record_vpn_up(recorder, down, [CAD], runner.states, 1_000)
    record_vpn_up(recorder, None, [CAD], runner.states, 1_000)
    assert WG0 not in recorder.latest()
