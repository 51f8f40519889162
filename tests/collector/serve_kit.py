"""The collector served as ``lifeline-collector serve`` serves it (uvicorn with its settings) on a
loopback port, in a thread, for tests that need real sockets."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn

from lifeline_collector.app import create_app
from lifeline_collector.config import CollectorConfig
from lifeline_collector.http_server import uvicorn_config
from lifeline_collector.service import Collector


@contextlib.contextmanager
def served(config: CollectorConfig, *, ticker: bool = True) -> Iterator[tuple[str, Collector]]:
    """``create_app(config)`` under uvicorn, in a thread: (base URL, the running collector)."""
    app = create_app(config, ticker=ticker)
    server = uvicorn.Server(uvicorn_config(app, config.server, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the server stopped"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://{config.server.listen}", app.state.collector
    finally:
        server.should_exit = True
        thread.join(20)
