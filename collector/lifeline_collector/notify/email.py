"""Email notifier: plain-text mail over SMTP with STARTTLS (smtplib, in a worker thread).

``require_tls = true`` (the default) refuses to send anything to a server that does not offer
STARTTLS; credentials are never sent without TLS whatever the setting. Retry semantics follow
SMTP's reply classes: 4xx and network trouble are worth retrying, 5xx and a refused login are not.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from lifeline_collector.alerting.alert import AlertGroup, AlertState
from lifeline_collector.errors import NotifyError
from lifeline_collector.notify.base import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_TIMEOUT,
    NAME_PATTERN,
    NotifierConfig,
    NotifierKind,
    NotifyContext,
    redact,
    register,
)
from lifeline_wire.tomlcfg import Section

_ADDRESS = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+$")
_HOST = re.compile(r"^[A-Za-z0-9.-]+$|^\[[0-9A-Fa-f:.]+\]$")


@dataclass(frozen=True, slots=True)
class EmailConfig(NotifierConfig):
    host: str = ""
    port: int = 587
    sender: str = ""
    to: tuple[str, ...] = ()
    username: str = ""
    password_file: str = ""
    password: str = field(default="", repr=False)
    require_tls: bool = True
    ca_file: str = ""  # a private CA for the relay's certificate; default: the system's
    send_resolved: bool = True

    def secrets(self) -> tuple[str, ...]:
        return tuple(value for value in (self.password,) if value)


def read_config(section: Section) -> NotifierConfig:
    name = section.text("name", required=True, pattern=NAME_PATTERN)
    host = section.text("host", required=True)
    if section.has("host") and isinstance(section.data["host"], str) and not _HOST.match(host):
        section.error("host", f"must be a host name or address (got {host!r})")
    port = section.integer("port", 587, min=1, max=65535)
    sender = section.text("from", required=True)
    to = section.str_list("to")
    if not to:
        section.error("to", "is required: at least one recipient address")
    for key, addresses in (("from", [sender] if sender else []), ("to", list(to))):
        for address in addresses:
            if not _ADDRESS.match(address):
                section.error(key, f"not an email address: {address!r}")
    username = section.text("username")
    password_file = section.text("password_file")
    password = ""
    if password_file:
        try:
            password = Path(password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            section.error(
                "password_file", f"cannot read {password_file} ({exc.strerror or type(exc).__name__})"
            )
        else:
            if not password:
                section.error("password_file", f"{password_file} is empty")
    if bool(username) != bool(password_file):
        section.error(
            "username" if password_file else "password_file", "username and password_file go together"
        )
    require_tls = section.flag("require_tls", True)
    ca_file = section.text("ca_file")
    if ca_file and not Path(ca_file).is_file():
        section.error("ca_file", f"no such file: {ca_file}")
    timeout = section.duration("timeout", DEFAULT_TIMEOUT, min=0.1, max=300.0)
    max_attempts = section.integer("max_attempts", DEFAULT_MAX_ATTEMPTS, min=1, max=100)
    send_resolved = section.flag("send_resolved", True)
    return EmailConfig(
        kind="email",
        name=name,
        url=f"smtp://{host}:{port}",
        timeout=timeout,
        max_attempts=max_attempts,
        host=host.strip("[]"),
        port=port,
        sender=sender,
        to=to,
        username=username,
        password_file=password_file,
        password=password,
        require_tls=require_tls,
        ca_file=ca_file,
        send_resolved=send_resolved,
    )


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_TAGS = {"repeat": "REPEAT", "escalation": "ESCALATED", "acknowledged": "ACKNOWLEDGED"}


def render(group: AlertGroup, config: EmailConfig, external_url: str) -> EmailMessage:
    """Subject: the sentence; body: the sentence, the details and the link, per alert."""
    status = group.status
    tag = _TAGS.get(group.reason, status.upper())
    first = group.alerts[0].annotations.get("summary") or group.alerts[0].name
    more = f" (+{len(group.alerts) - 1} more)" if len(group.alerts) > 1 else ""
    message = EmailMessage()
    message["Subject"] = " ".join(f"[{tag}] {first}{more}".split())  # no line breaks in a header
    message["From"] = config.sender
    message["To"] = ", ".join(config.to)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain="lifeline")
    message["X-Lifeline-Status"] = status
    parts: list[str] = []
    for alert in group.alerts:
        state = "RESOLVED" if alert.state is AlertState.RESOLVED else "FIRING"
        lines = [alert.annotations.get("summary", alert.name), ""]
        if alert.annotations.get("description"):
            lines += [alert.annotations["description"], ""]
        lines.append(f"Status:   {state} since {_when(alert.fired_at or alert.starts_at)}")
        if alert.ends_at is not None:
            lines.append(f"Resolved: {_when(alert.ends_at)}")
        lines += [f"{name + ':':<10}{value}" for name, value in sorted(alert.labels.items())]
        lines.append(f"Link:     {alert.annotations.get('link', external_url)}")
        lines.append(
            f"Fingerprint: {alert.fingerprint}"
            f" (acknowledge: lifeline-collector alerts ack {alert.fingerprint} --by NAME)"
        )
        parts.append("\n".join(lines))
    message.set_content("\n\n---\n\n".join(parts) + "\n\n-- \nLifeline collector " + external_url + "\n")
    return message


class EmailNotifier:
    kind = "email"
    wants_resend = False

    def __init__(self, config: NotifierConfig, context: NotifyContext) -> None:
        if not isinstance(config, EmailConfig):  # pragma: no cover - the registry pairs them
            raise TypeError("EmailNotifier needs an EmailConfig")
        self.config = config
        self.name = config.name
        self.secrets = config.secrets()
        self.max_attempts = config.max_attempts
        self.context = context
        self.where = f"{config.host}:{config.port}"

    async def send(self, group: AlertGroup) -> None:
        if group.status == AlertState.RESOLVED.value and not self.config.send_resolved:
            return
        message = render(group, self.config, self.context.external_url)
        try:
            await asyncio.to_thread(self._send, message)
        except NotifyError:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise self._error(
                f"{self.where} refused the login ({exc.smtp_code})", False, exc.smtp_code
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _text in exc.recipients.values()]
            retry = all(400 <= code < 500 for code in codes)
            raise self._error(
                f"{self.where} refused every recipient ({', '.join(map(str, codes))})", retry
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise self._error(f"{self.where}: {exc}", False) from None
        except smtplib.SMTPResponseException as exc:
            detail = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            retry = 400 <= exc.smtp_code < 500 or exc.smtp_code < 0
            raise self._error(
                f"{self.where} answered {exc.smtp_code} {detail[:200]}", retry, exc.smtp_code
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise self._error(
                f"{self.where}: TLS certificate not trusted ({exc.verify_message})", False
            ) from None
        except ssl.SSLError as exc:
            raise self._error(
                f"{self.where}: TLS failed ({exc.reason or type(exc).__name__})", False
            ) from None
        except (OSError, smtplib.SMTPException) as exc:  # refused, reset, timed out, disconnected
            raise self._error(f"cannot reach {self.where}: {type(exc).__name__}: {exc}", True) from None

    def _error(self, reason: str, retryable: bool, status: int | None = None) -> NotifyError:
        return NotifyError(self.name, redact(reason, self.secrets), retryable=retryable, status=status)

    def _send(self, message: EmailMessage) -> None:
        config = self.config
        context = ssl.create_default_context(cafile=config.ca_file or None)
        with smtplib.SMTP(config.host, config.port, timeout=config.timeout) as smtp:
            smtp.ehlo()
            secure = False
            if smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
                secure = True
            elif config.require_tls:
                raise self._error(
                    f"{self.where} does not offer STARTTLS and require_tls is on: nothing was sent", False
                )
            if config.username:
                if not secure:
                    raise self._error(
                        f"{self.where} offers no TLS: refusing to send the password in clear", False
                    )
                smtp.login(config.username, config.password)
            smtp.send_message(message, from_addr=config.sender, to_addrs=list(config.to))

    async def aclose(self) -> None:
        return None


register(
    NotifierKind(
        kind="email",
        read_config=read_config,
        build=EmailNotifier,
        summary="plain-text mail over SMTP with STARTTLS to the addresses in to",
    )
)
