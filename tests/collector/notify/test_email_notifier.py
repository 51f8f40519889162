"""Email notifier against a real SMTP server (aiosmtpd on loopback) with STARTTLS and a throwaway CA."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

import pytest
from collector_kit import T0
from notify_kit import Cert, Mailbox, smtp_server

from lifeline_collector.alerting.alert import Alert, AlertState, fingerprint, group_of
from lifeline_collector.clock import ManualClock
from lifeline_collector.config import parse
from lifeline_collector.errors import NotifyError
from lifeline_collector.notify import REGISTRY, Notifier, NotifyContext
from lifeline_wire.tomlcfg import ConfigError

pytestmark = pytest.mark.anyio

PASSWORD = "smtp-pa55word-never-logged"


def alert(state: AlertState = AlertState.FIRING) -> Alert:
    labels = {"alertname": "PositionLayerFailed", "agent": "pos-12", "site": "north", "position": "12",
              "severity": "critical", "layer": "vpn"}  # fmt: skip
    return Alert(
        labels=labels,
        annotations={
            "summary": "Position 12 (north) lost CAD — VPN tunnel down, internet fine; hotspot ready.",
            "description": "The agent on Position 12 (north) reports the vpn layer failed.",
            "link": "https://lifeline.example/positions/pos-12",
        },
        state=state,
        starts_at=T0,
        ends_at=T0 + 90 if state is AlertState.RESOLVED else None,
        fingerprint=fingerprint(labels),
        scope="pos-12",
        fired_at=T0,
    )


def notifier(tmp_path: Path, port: int, cert: Cert | None, **extra: Any) -> Notifier:
    settings: dict[str, Any] = {
        "kind": "email",
        "name": "mail",
        "host": "127.0.0.1",
        "port": port,
        "from": "lifeline@agency.example",
        "to": ["floor-supervisor@agency.example", "it@agency.example"],
        "timeout": "5s",
        **extra,
    }
    if cert is not None and "ca_file" not in extra:
        settings["ca_file"] = str(cert.cert)
    config = parse({"notifiers": [settings]})
    return REGISTRY["email"].build(
        config.notifiers[0], NotifyContext("https://lifeline.example", ManualClock(T0), 60)
    )


def login(tmp_path: Path) -> dict[str, str]:
    password_file = tmp_path / "smtp.password"
    password_file.write_text(PASSWORD + "\n")
    return {"username": "lifeline", "password_file": str(password_file)}


async def test_firing_and_resolved_over_starttls_with_login(tmp_path: Path, tls_cert: Cert) -> None:
    box = Mailbox(password=PASSWORD)
    with smtp_server(box, tls_cert, auth=True) as port:
        mail = notifier(tmp_path, port, tls_cert, **login(tmp_path))
        assert PASSWORD in mail.secrets
        await mail.send(group_of(alert()))
        await mail.send(group_of(alert(AlertState.RESOLVED)))
        await mail.aclose()
    assert box.tls == [True, True]
    assert box.logins == [("lifeline", "***"), ("lifeline", "***")]
    firing, resolved = (
        email.message_from_bytes(m.original_content, policy=email.policy.default) for m in box.messages
    )  # type: ignore[arg-type]
    assert box.messages[0].rcpt_tos == ["floor-supervisor@agency.example", "it@agency.example"]
    assert firing["Subject"] == (
        "[FIRING] Position 12 (north) lost CAD — VPN tunnel down, internet fine; hotspot ready."
    )
    assert firing["From"] == "lifeline@agency.example"
    body = firing.get_body(("plain",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
    assert body.startswith("Position 12 (north) lost CAD — VPN tunnel down, internet fine; hotspot ready.\n")
    assert "Link:     https://lifeline.example/positions/pos-12" in body
    assert "Status:   FIRING since 2023-11-14 22:13:20 UTC" in body
    assert "site:     north" in body
    assert f"alerts ack {fingerprint(alert().labels)}" in body
    assert resolved["Subject"].startswith("[RESOLVED] Position 12 (north)")
    assert "Resolved: 2023-11-14 22:14:50 UTC" in resolved.get_body(("plain",)).get_content()  # type: ignore[union-attr]


async def test_require_tls_refuses_a_server_without_starttls(tmp_path: Path) -> None:
    box = Mailbox()
    with smtp_server(box, None) as port:
        mail = notifier(tmp_path, port, None)
        with pytest.raises(NotifyError) as caught:
            await mail.send(group_of(alert()))
    assert not caught.value.retryable
    assert "does not offer STARTTLS" in str(caught.value)
    assert box.messages == []


async def test_without_tls_mail_may_go_but_a_password_never(tmp_path: Path) -> None:
    box = Mailbox(password=PASSWORD)
    with smtp_server(box, None) as port:
        await notifier(tmp_path, port, None, require_tls=False).send(group_of(alert()))
        assert box.tls == [False]
        with pytest.raises(NotifyError) as caught:
            await notifier(tmp_path, port, None, require_tls=False, **login(tmp_path)).send(group_of(alert()))
    assert not caught.value.retryable
    assert "refusing to send the password in clear" in str(caught.value)
    assert box.logins == []  # the password never left


async def test_untrusted_certificate_is_not_retried(tmp_path: Path, tls_cert: Cert) -> None:
    box = Mailbox()
    with smtp_server(box, tls_cert) as port, pytest.raises(NotifyError) as caught:
        await notifier(tmp_path, port, None).send(group_of(alert()))  # system CAs only
    assert not caught.value.retryable
    assert "certificate not trusted" in str(caught.value)
    assert box.messages == []


async def test_send_resolved_false(tmp_path: Path, tls_cert: Cert) -> None:
    box = Mailbox()
    with smtp_server(box, tls_cert) as port:
        await notifier(tmp_path, port, tls_cert, send_resolved=False).send(
            group_of(alert(AlertState.RESOLVED))
        )
    assert box.messages == []


def test_email_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(
            {
                "notifiers": [
                    {"kind": "email", "name": "m", "host": "smtp relay", "from": "nobody", "to": [],
                     "username": "u", "port": 70000, "ca_file": str(tmp_path / "none.pem")},
                ]
            }
        )  # fmt: skip
    problems = dict(caught.value.problems)
    assert problems == {
        "notifiers[0].host": "must be a host name or address (got 'smtp relay')",
        "notifiers[0].port": "must be ≤ 65535 (got 70000)",
        "notifiers[0].to": "is required: at least one recipient address",
        "notifiers[0].from": "not an email address: 'nobody'",
        "notifiers[0].password_file": "username and password_file go together",
        "notifiers[0].ca_file": f"no such file: {tmp_path / 'none.pem'}",
    }
