"""Lab fixtures for tests/lab: one fresh lab per test module, always torn down and checked."""

from lifeline_lab.testing import lab_fixture

lab = lab_fixture()  # client VPN (WireGuard on the laptop), no CAD simulator
router_lab = lab_fixture(vpn="router", tag="r")  # WireGuard on the home router
cad_lab = lab_fixture(cadsim=True, tag="c")  # client VPN with CAD server, DNS server and CAD client
