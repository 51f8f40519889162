"""Every registered notifier, one contract: retry semantics and no secret in any error or log.

Each kind has a harness that builds it against a real peer on loopback (an HTTP receiver, an SMTP
server) told to behave in one way: accept, fail on its side (5xx / 4xx SMTP reply), refuse the
request (4xx / 5xx SMTP reply), refuse the credentials, or not be there at all.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from collector_kit import T0, free_port, running_receiver
from notify_kit import Cert, Mailbox, smtp_server

from lifeline_collector.alerting.alert import Alert, AlertState, fingerprint, group_of
from lifeline_collector.clock import ManualClock
from lifeline_collector.config import parse
from lifeline_collector.errors import NotifyError
from lifeline_collector.notify import REGISTRY, Notifier, NotifyContext
from lifeline_collector.notify.dispatch import Dispatcher
from lifeline_collector.self_metrics import Stats

pytestmark = pytest.mark.anyio

TOKEN = "tok-3f9a-very-secret-bearer"
HEADER_SECRET = "hdr-77-secret-value"
PASSWORD = "smtp-secret-pw-4711"
SECRETS = (TOKEN, HEADER_SECRET, PASSWORD)

# behaviour → retryable (None: delivered)
BEHAVIOURS: dict[str, bool | None] = {
    "ok": None,
    "server-error": True,
    "client-error": False,
    "auth-failure": False,
    "unreachable": True,
}

Harness = Callable[[Path, str, Cert], contextlib.AbstractContextManager[Notifier]]


def context() -> NotifyContext:
    return NotifyContext("http://collector.example", ManualClock(T0), 60.0)


def _http_harness(kind: str) -> Harness:
    @contextlib.contextmanager
    def build(tmp_path: Path, behaviour: str, cert: Cert) -> Iterator[Notifier]:
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        with running_receiver() as receiver:
            receiver.statuses = {
                "server-error": [503] * 9,
                "client-error": [400] * 9,
                "auth-failure": [401] * 9,
            }.get(behaviour, [])
            url = f"http://127.0.0.1:{free_port()}/gone" if behaviour == "unreachable" else receiver.url
            config = parse(
                {
                    "notifiers": [
                        {"kind": kind, "name": "n", "url": url, "token_file": str(token_file), "timeout": "2s",
                         "headers": {"X-Secret": HEADER_SECRET}, "max_attempts": 2},
                    ]
                }
            )  # fmt: skip
            notifier = REGISTRY[kind].build(config.notifiers[0], context())
            yield notifier

    return build


@contextlib.contextmanager
def _email_harness(tmp_path: Path, behaviour: str, cert: Cert) -> Iterator[Notifier]:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)
    box = Mailbox(password=PASSWORD if behaviour != "auth-failure" else "something-else")
    box.data_reply = "451 4.3.0 mailbox busy, try later" if behaviour == "server-error" else "250 OK"
    box.rcpt_reply = "550 5.1.1 no such user" if behaviour == "client-error" else ""
    with smtp_server(box, cert, auth=True) as port:
        config = parse(
            {
                "notifiers": [
                    {"kind": "email", "name": "n", "host": "127.0.0.1",
                     "port": free_port() if behaviour == "unreachable" else port,
                     "from": "lifeline@agency.example", "to": ["sup@agency.example"], "username": "lifeline",
                     "password_file": str(password_file), "ca_file": str(cert.cert), "timeout": "2s",
                     "max_attempts": 2},
                ]
            }
        )  # fmt: skip
        yield REGISTRY["email"].build(config.notifiers[0], context())


HARNESSES: dict[str, Harness] = {
    "webhook": _http_harness("webhook"),
    "alertmanager": _http_harness("alertmanager"),
    "email": _email_harness,
}


def test_every_registered_notifier_has_a_harness() -> None:
    assert set(HARNESSES) == set(REGISTRY)


def firing() -> Alert:
    labels = {"alertname": "CadAtRisk", "agent": "pos-12", "site": "north", "severity": "critical"}
    return Alert(
        labels=labels,
        annotations={"summary": "Position 12 (north) will likely lose CAD within 45 s", "link": "http://x/p"},
        state=AlertState.FIRING,
        starts_at=T0,
        fingerprint=fingerprint(labels),
        scope="pos-12",
    )


def no_secret_in(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.parametrize("behaviour", sorted(BEHAVIOURS))
@pytest.mark.parametrize("kind", sorted(REGISTRY))
async def test_retry_semantics_and_no_secrets(
    kind: str, behaviour: str, tmp_path: Path, tls_cert: Cert, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    expected = BEHAVIOURS[behaviour]
    with HARNESSES[kind](tmp_path, behaviour, tls_cert) as notifier:
        assert any(secret in notifier.secrets for secret in SECRETS)  # it knows what to hide
        # 1. The error itself says whether retrying helps, and carries no secret.
        if expected is None:
            await notifier.send(group_of(firing()))
        else:
            with pytest.raises(NotifyError) as caught:
                await notifier.send(group_of(firing()))
            assert caught.value.retryable is expected, str(caught.value)
            assert caught.value.notifier == "n"
            no_secret_in(str(caught.value))
            no_secret_in(caught.value.reason)
            no_secret_in(repr(caught.value.args))
        # 2. The retry loop: retries what is retryable, logs without secrets.
        stats = Stats()
        dispatcher = Dispatcher([notifier], stats, backoff_first=0.01)
        dispatcher.start()
        dispatcher.submit(group_of(firing()))
        assert await dispatcher.drain(20)
        await dispatcher.stop()
    counts = {result: stats.notifications[("n", result)] for result in ("ok", "retry", "failed")}
    if expected is None:
        assert counts == {"ok": 1, "retry": 0, "failed": 0}
    elif expected:
        assert counts == {"ok": 0, "retry": 1, "failed": 1}  # max_attempts = 2
    else:
        assert counts == {"ok": 0, "retry": 0, "failed": 1}
    assert caplog.records, "a failure or a delivery leaves some log record"
    for record in caplog.records:
        no_secret_in(record.getMessage())
        no_secret_in(repr(record.args))
        no_secret_in(record.exc_text or "")
    no_secret_in(repr(notifier.config))  # type: ignore[attr-defined]
