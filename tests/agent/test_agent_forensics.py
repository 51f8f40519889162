"""Where the agent traces when a layer breaks, and what a finished trace leaves behind."""

from __future__ import annotations

from lifeline_agent.clock import SystemClock
from lifeline_agent.config import Target
from lifeline_agent.forensics import Hop, Trace, report_trace, trace_destinations
from lifeline_agent.recorder import Recorder


def test_traces_go_to_the_vpn_concentrators_then_the_cad_hosts_once_each() -> None:
    targets = [
        Target(name="cad-tcp", role="cad", kind="tcp", host="10.20.0.5", port=443),
        Target(name="cad-ping", role="cad", kind="icmp", host="10.20.0.5"),
        Target(name="gw", role="router", kind="icmp", host="192.168.1.1"),
    ]
    assert trace_destinations(("203.0.113.10",), targets) == ["203.0.113.10", "10.20.0.5"]


def test_a_trace_becomes_an_event_naming_its_layer_and_what_it_went_toward() -> None:
    recorder = Recorder(SystemClock())
    hops = (Hop(1, "192.168.1.1", 0.001), Hop(2, "", None))
    report_trace(recorder, Trace("203.0.113.10", "203.0.113.10", hops), "internet", ("203.0.113.10",))
    report_trace(recorder, Trace("10.20.0.5", "10.20.0.5", reached=True), "cad", ("203.0.113.10",))
    _samples, events = recorder.drain()
    assert [e.type for e in events] == ["forensics.traceroute", "forensics.traceroute"]
    toward_vpn, toward_cad = (e.attributes for e in events)
    assert (toward_vpn["layer"], toward_vpn["toward"], toward_vpn["hop_2"]) == ("internet", "vpn", "*")
    assert (toward_cad["layer"], toward_cad["toward"], toward_cad["reached"]) == ("cad", "cad", True)
