"""The ``[auth]`` table: who may read, how long a session lasts, lockout, audit retention, SSO."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from lifeline_collector.token_files import token_file_hash
from lifeline_wire.tomlcfg import Section

YEAR = 365 * 86400.0
READ_ACCESS = ("viewer", "open")


@dataclass(frozen=True, slots=True)
class AuthConfig:
    # "viewer": reads of positions, alerts and silences need a login or an API token (the default);
    # "open": anyone who can reach the collector reads them (a closed network that wants it so).
    read_access: str = "viewer"
    session_lifetime: float = 12 * 3600.0  # a shift; then log in again
    session_idle: float = 3600.0  # a session unused this long ends (the board's stream keeps it alive)
    lockout_after: int = 5  # failed logins of one account from one address … (CJIS 5.5.3)
    lockout_for: float = 600.0  # … lock that account at that address for this long
    address_lockout_after: int = 20  # failed logins from one address, any account: password spraying
    audit_retention: float = 400 * 86400.0  # never below a year (CJIS 5.4.7)
    # Single sign-on through an authenticating reverse proxy: the user name in this header is
    # believed only from ``trusted_proxies`` (addresses or networks), never from anyone else.
    sso_header: str = ""
    trusted_proxies: tuple[str, ...] = ()
    sso_role: str = "viewer"  # the role of an SSO user with no account here
    # A machine token that may only read (a status display, a script): the ``read-token``
    # principal with the viewer role. The ``[api]`` token is the admin one.
    viewer_token_file: str = ""
    viewer_token_hash: str = field(default="", repr=False)

    def proxy_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(net, strict=False) for net in self.trusted_proxies)


def read_auth(section: Section) -> AuthConfig:
    default = AuthConfig()
    read_access = section.choice("read_access", default.read_access, READ_ACCESS)
    lifetime = section.duration("session_lifetime", default.session_lifetime, min=60.0, max=7 * 86400.0)
    idle = section.duration("session_idle", default.session_idle, min=60.0, max=7 * 86400.0)
    lockout_after = section.integer("lockout_after", default.lockout_after, min=1, max=100)
    lockout_for = section.duration("lockout_for", default.lockout_for, min=1.0, max=86400.0)
    address_after = section.integer("address_lockout_after", default.address_lockout_after, min=1, max=10_000)
    retention = section.duration("audit_retention", default.audit_retention, min=YEAR)
    sso_header = section.text("sso_header", default.sso_header, pattern=r"[A-Za-z0-9-]*")
    proxies = section.str_list("trusted_proxies")
    sso_role = section.choice("sso_role", default.sso_role, ("viewer", "supervisor", "admin"))
    token_file = section.text("viewer_token_file")
    token_hash = token_file_hash(section, "viewer_token_file")
    section.finish()
    for index, net in enumerate(proxies):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            section.problems.add(
                f"{section.key('trusted_proxies')}[{index}]",
                f"must be an IP address or network (got {net!r})",
            )
    if sso_header and not proxies:
        section.error("sso_header", "needs trusted_proxies: the header is believed only from those addresses")
    if idle > lifetime:
        section.error("session_idle", "must not be longer than session_lifetime")
    return AuthConfig(
        read_access=read_access,
        session_lifetime=lifetime,
        session_idle=idle,
        lockout_after=lockout_after,
        lockout_for=lockout_for,
        address_lockout_after=address_after,
        audit_retention=retention,
        sso_header=sso_header,
        trusted_proxies=proxies,
        sso_role=sso_role,
        viewer_token_file=token_file,
        viewer_token_hash=token_hash,
    )
