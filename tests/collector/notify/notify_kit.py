"""Helpers of the notifier tests: a real Alertmanager, a self-signed certificate, a real SMTP server."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from collector_kit import free_port

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


@contextlib.contextmanager
def running_alertmanager(
    tmp_path: Path, *, config_text: str = "", cluster: tuple[int, list[int]] | None = None
) -> Iterator[str]:
    """A real Alertmanager on loopback (blackhole receiver unless config_text says otherwise);
    yields its base URL; stopped by PID. ``cluster`` is (own gossip port, peers' gossip ports)."""
    config = tmp_path / "alertmanager.yml"
    config.write_text(config_text or "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n")
    port = free_port()
    log_path = tmp_path / "alertmanager.log"
    if cluster is None:
        cluster_args = ["--cluster.listen-address="]
    else:
        own, peers = cluster
        cluster_args = [
            f"--cluster.listen-address=127.0.0.1:{own}",
            *(f"--cluster.peer=127.0.0.1:{peer}" for peer in peers),
            # Short timers so a test sees the pair settle and deduplicate in seconds.
            "--cluster.peer-timeout=2s",
            "--cluster.gossip-interval=50ms",
            "--cluster.settle-timeout=2s",
        ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                ALERTMANAGER,
                f"--config.file={config}",
                f"--storage.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                *cluster_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"alertmanager did not start: {log_path.read_text()}")
                time.sleep(0.05)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


def self_signed(directory: Path) -> Cert:
    """A throwaway certificate for 127.0.0.1 and localhost (openssl, no extra Python dependency)."""
    openssl = shutil.which("openssl")
    if openssl is None:  # pragma: no cover - openssl is in the base system
        raise RuntimeError("openssl is needed to make a test certificate")
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return Cert(cert, key)


@dataclass
class Mailbox:
    """What the SMTP server received, and how it should answer."""

    messages: list[Envelope] = field(default_factory=list)
    tls: list[bool] = field(default_factory=list)  # per message: was the session under TLS
    logins: list[tuple[str, str]] = field(default_factory=list)
    data_reply: str = "250 OK"  # e.g. "451 4.3.0 try again later"
    rcpt_reply: str = ""  # e.g. "550 5.1.1 no such user" (empty: accept)
    password: str = ""  # the accepted password

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply.startswith("250"):
            self.messages.append(envelope)
            self.tls.append(session.ssl is not None)
        return self.data_reply

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            self.logins.append((login, "***"))
            if password == self.password:
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


@contextlib.contextmanager
def smtp_server(mailbox: Mailbox, cert: Cert | None, *, auth: bool = False) -> Iterator[int]:
    """An aiosmtpd server on loopback; STARTTLS offered when ``cert`` is given. Yields its port."""
    import ssl

    kwargs: dict[str, Any] = {}
    if cert is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert.cert, cert.key)
        kwargs.update(tls_context=context, require_starttls=True)
    if auth:
        kwargs.update(
            authenticator=mailbox.authenticate, auth_required=True, auth_require_tls=cert is not None
        )
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()
