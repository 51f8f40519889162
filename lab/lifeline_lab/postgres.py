"""A real PostgreSQL server (Debian's ``postgresql``) in a throwaway directory, for tests and
benchmarks.

The server refuses to run as root, so as root it runs as ``nobody``; it listens on a Unix socket in
its directory and a free loopback port, and is stopped and removed afterwards. ``fresh_database``
gives each user a database of its own, dropped at its end.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

USER = "lifeline"


def postgres_bin() -> Path | None:
    """The newest installed server's bin directory, or None when postgresql is not installed."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parent.parent.name)
    )
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    port: int
    directory: Path
    _names: Iterator[int]
    _control: list[str] = field(default_factory=list)  # pg_ctl (as the server's user) -D data
    _options: str = ""

    def stop(self) -> None:
        """Stop the server as an operator's restart does (fast: sessions are ended)."""
        subprocess.run([*self._control, "-m", "fast", "-w", "stop"], check=True, capture_output=True)

    def start(self) -> None:
        """Start it again on the same port and data."""
        log = self.directory / "server.log"
        subprocess.run(
            [*self._control, "-l", str(log), "-o", self._options, "-w", "start"],
            check=True,
            capture_output=True,
        )

    def postmaster_pid(self) -> int:
        """The server's main process (its backends are its children), for CPU accounting."""
        return int((self.directory / "data" / "postmaster.pid").read_text().split()[0])

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    @contextlib.contextmanager
    def fresh_database(self) -> Iterator[str]:
        """A new empty database; yields its DSN; dropped afterwards (any connection left is cut)."""
        import psycopg

        name = f"t{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        try:
            yield self.dsn(name)
        finally:
            with psycopg.connect(self.dsn(), autocommit=True) as admin:
                admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@contextlib.contextmanager
def running_postgres(*, fsync: bool = False) -> Iterator[Server]:
    """A fresh server; ``fsync=False`` (tests) trades durability on a power cut for speed, a
    benchmark that compares engines keeps it on as a production server does."""
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("postgresql is not installed")
    as_user: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="lifeline-pg-"))
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "nobody", "--"]
        shutil.chown(directory, "nobody")
    data, log = directory / "data", directory / "server.log"
    port = _free_port()
    try:
        subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", USER,
             "--no-locale", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True,
        )  # fmt: skip
        options = (
            f"-k {directory} -p {port} -c listen_addresses=127.0.0.1 -c fsync={'on' if fsync else 'off'}"
        )
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"],
            check=True, capture_output=True,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        detail = log.read_text() if log.exists() else ""
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"postgresql did not start: {exc.stderr.decode()} {detail}") from None
    try:
        yield Server(
            port, directory, itertools.count(), [*as_user, str(bindir / "pg_ctl"), "-D", str(data)], options
        )
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            check=False, capture_output=True,
        )  # fmt: skip
        shutil.rmtree(directory, ignore_errors=True)
