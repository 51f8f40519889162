"""The test's pager: an Alertmanager-format webhook receiver on the loopback of several namespaces.

Lifeline's collector (in ``vpnhub``) and the conventional stack's Alertmanager (in ``laptop``) page
the same receiver, each on its own namespace's loopback, so a test compares both by the wall clock
at which each notification arrived.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lifeline_lab.netns import listener_in


@dataclass(frozen=True, slots=True)
class Notification:
    """One alert of one webhook payload, stamped with the receiver's wall clock."""

    at: float
    via: str  # the namespace it came in from
    receiver: str
    status: str  # firing | resolved
    labels: dict[str, str]
    annotations: dict[str, str]

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")


class WebhookReceiver:
    """An Alertmanager-format webhook receiver listening on the loopback of several namespaces."""

    def __init__(self, namespaces: Sequence[str]) -> None:
        self._lock = threading.Lock()
        self._items: list[Notification] = []
        self.ports: dict[str, int] = {}
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        try:
            for ns in namespaces:
                self._listen(ns)
        except BaseException:
            self.close()
            raise

    def _listen(self, ns: str) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    payload = json.loads(body)
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                receiver._record(at, ns, payload)
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = listener_in(ns)
        server.server_address = server.socket.getsockname()
        self.ports[ns] = int(server.server_address[1])
        thread = threading.Thread(target=server.serve_forever, name=f"webhook-{ns}", daemon=True)
        thread.start()
        self._servers.append(server)
        self._threads.append(thread)

    def url(self, ns: str) -> str:
        return f"http://127.0.0.1:{self.ports[ns]}/hook"

    def _record(self, at: float, ns: str, payload: dict[str, Any]) -> None:
        receiver = str(payload.get("receiver", ""))
        items = [
            Notification(
                at,
                ns,
                receiver,
                str(alert.get("status", "")),
                {str(k): str(v) for k, v in (alert.get("labels") or {}).items()},
                {str(k): str(v) for k, v in (alert.get("annotations") or {}).items()},
            )
            for alert in payload.get("alerts") or []
        ]
        with self._lock:
            self._items.extend(items)

    def notifications(
        self, *, via: str | None = None, since: float = 0.0, status: str | None = None
    ) -> list[Notification]:
        with self._lock:
            items = list(self._items)
        return [
            n
            for n in items
            if (via is None or n.via == via) and n.at >= since and (status is None or n.status == status)
        ]

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join()
        self._servers.clear()
        self._threads.clear()
