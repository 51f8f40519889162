"""Any path that works, in the home-network lab: the "CAD down" state change reaches the collector
when the tunnel is blackholed (over the public endpoint), and when the primary link is dead too
(bound to the hotspot's usb0).

The collector (``lifeline-collector serve``) runs on the VPN concentrator, listening on every
address: ``10.20.0.1`` is its agency-internal address, reached only through the WireGuard tunnel;
``203.0.113.10`` is its public address, reached over the internet from the home router or the
hotspot. The agent (``lifeline-agent run``) in the laptop namespace has both endpoints, the public
one allowed, and probes the CAD server through the tunnel. Which way a request came is read from
the collector's access log: the tunnel address ``10.99.0.2``, the home router's NAT ``198.51.100.2``,
or the hotspot's NAT ``100.64.0.2``.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent" / "delivery"))

from delivery_procs import Collector, Proc, agent_config, agent_proc, wait_for

from lifeline_lab import impair
from lifeline_lab.layout import ADDR, CAD_PORT
from lifeline_lab.topology import Lab

pytestmark = [pytest.mark.lab, pytest.mark.system, pytest.mark.slow]

PORT = 8480
INTERNAL = f"http://{ADDR.vpnhub_lan}:{PORT}"
PUBLIC = f"http://{ADDR.vpnhub_public}:{PORT}"
_ACCESS = re.compile(
    r"^(?P<when>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO uvicorn\.access: "
    r"(?P<addr>[\d.]+):\d+ - \"POST /api/v1/ingest HTTP/1\.1\" (?P<status>\d+)"
)


@dataclass
class Setup:
    lab: Lab
    collector: Collector
    agent: Proc


@pytest.fixture(scope="module")
def setup(cad_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("delivery-paths")
    hub = ("ip", "netns", "exec", cad_lab.ns("vpnhub"))
    collector = Collector(work / "collector", f"0.0.0.0:{PORT}", prefix=hub)
    token = collector.register()
    collector.start()
    config = agent_config(
        work / "agent",
        token,
        [INTERNAL, {"url": PUBLIC, "public": True}],
        [{"name": "cad", "role": "cad", "kind": "tcp", "host": ADDR.cad_server, "port": CAD_PORT,
          "interval": "500ms", "timeout": "400ms", "path": "tunnel"}],
        batch_interval="1s",
        collector_options={"allow_public": True},
    )  # fmt: skip
    agent = agent_proc(config, prefix=("ip", "netns", "exec", cad_lab.ns("laptop")))
    try:
        wait_for(
            "the collector to listen",
            lambda: bool(cad_lab.exec("vpnhub", ["ss", "-tlnH", f"sport = :{PORT}"]).stdout.strip()),
        )
        agent.start()
        wait_for("batches over the tunnel", lambda: sources_since(collector, 0) & {ADDR.tunnel_client})
        wait_for("CAD answering", lambda: cad_up_since(collector, 0))
        yield Setup(cad_lab, collector, agent)
    finally:
        agent.stop()
        collector.stop()
        impair.clear(cad_lab)


def now_ms() -> int:
    return int(time.time() * 1000)


def accepted_requests(collector: Collector) -> list[tuple[int, str]]:
    """(time in ms, client address) of every ingest request the collector answered with 200."""
    out = []
    for line in collector.proc.text().splitlines() if collector.proc else []:
        match = _ACCESS.match(line)
        if match and match["status"] == "200":
            when = datetime.strptime(match["when"], "%Y-%m-%d %H:%M:%S,%f")  # noqa: DTZ007 - local, as logged
            out.append((int(when.timestamp() * 1000), match["addr"]))
    return out


def cad_up_since(collector: Collector, since_ms: int) -> bool:
    """The collector has a successful CAD probe round measured after ``since_ms``."""
    rounds = collector.samples("lifeline_probe_success")
    return any(value == 1.0 and ts > since_ms for _labels, ts, value, _received in rounds)


def sources_since(collector: Collector, since_ms: int) -> set[str]:
    return {addr for when, addr in accepted_requests(collector) if when >= since_ms}


def around_since(collector: Collector, received: int, since_ms: int) -> set[str]:
    """Client addresses of requests accepted around ``received`` (from 250 ms before to two seconds
    after) and after ``since_ms``.

    The collector stores a batch before it answers, and uvicorn writes the access-log line as the
    answer starts: the line of the batch the store already shows comes after ``received`` and may
    still be on its way (on a loaded machine, a while), so this waits (up to 10 s) for at least
    one. A request that crossed the tunnel just before the cut is answered (and logged) right at
    the cut, a probe timeout or more before the state change can arrive: the window starts late
    enough to leave it out.
    """

    def around() -> set[str]:
        return {
            addr
            for when, addr in accepted_requests(collector)
            if when >= since_ms and -250 <= when - received <= 2000
        }

    wait_for("the access-log line of the stored batch", lambda: bool(around()), 10)
    return around()


def state_change(collector: Collector, state: str, since_ms: int) -> tuple[int, int, bool] | None:
    """(measured, received, priority) of the first CAD state change to ``state`` since ``since_ms``."""
    rows = collector.query(
        "SELECT e.ts_ms, b.received_ms, b.priority, e.attributes FROM events e JOIN batches b ON b.id = e.batch"
        " WHERE e.type = 'probe.state_change' AND e.ts_ms >= ? ORDER BY e.ts_ms",
        (since_ms,),
    )
    for ts, received, priority, attributes in rows:
        attrs = json.loads(attributes)
        if attrs.get("target") == "cad" and attrs.get("state") == state:
            return int(ts), int(received), bool(priority)
    return None


def arrived(collector: Collector, state: str, since_ms: int) -> tuple[int, int, bool]:
    wait_for(
        f"CAD {state} at the collector", lambda: state_change(collector, state, since_ms) is not None, 60
    )
    found = state_change(collector, state, since_ms)
    assert found is not None
    return found


def test_tunnel_blackholed_the_state_change_goes_to_the_public_endpoint(setup: Setup) -> None:
    lab, collector = setup.lab, setup.collector
    start = now_ms()
    impair.apply(lab, impair.make("blackhole", "tunnel", "both"))
    try:
        measured, received, priority = arrived(collector, "down", start)
        assert priority, "a state change travels in the priority lane"
        # It came over the home broadband to the public address: the home router's NAT address.
        # (Only requests since the cut: a batch that went through the tunnel just before it may
        # land within a second of a state change that does not wait for the tunnel to time out.)
        around = around_since(collector, received, start)
        assert around == {ADDR.router_wan}
        # (The agent logs the switch once it has the answer: a moment after the collector stored it.)
        wait_for(
            "the agent to log the path",
            lambda: f"delivering via {PUBLIC} via the default route" in setup.agent.text(),
            10,
        )
        print(f"tunnel blackholed: CAD down measured {measured - start} ms after the cut, "
              f"at the collector {received - measured} ms later")  # fmt: skip
    finally:
        cleared = now_ms()
        impair.clear(lab)
    arrived(collector, "up", cleared)


def test_tunnel_and_primary_blackholed_the_state_change_arrives_over_the_hotspot(setup: Setup) -> None:
    lab, collector = setup.lab, setup.collector
    start = now_ms()
    wait_for("CAD answering", lambda: cad_up_since(collector, start))
    start = now_ms()
    impair.apply(lab, impair.make("blackhole", "tunnel", "both"))
    impair.apply(lab, impair.make("blackhole", "primary", "both"))
    try:
        measured, received, priority = arrived(collector, "down", start)
        assert priority
        around = around_since(collector, received, start)
        assert around == {ADDR.hotspot_wan}  # the request left through usb0 and the hotspot's NAT
        assert ADDR.router_wan not in sources_since(collector, received)
        wait_for(
            "the agent to log the path", lambda: f"delivering via {PUBLIC} via usb0" in setup.agent.text(), 10
        )
        print(f"tunnel and primary blackholed: CAD down measured {measured - start} ms after the cut, "
              f"at the collector {received - measured} ms later")  # fmt: skip
    finally:
        impair.clear(lab)
