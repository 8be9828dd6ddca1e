"""The admin HTTP listener every service runs: /healthz, /readyz, /metrics, plus extra routes.

It runs in its own daemon thread on the standard library's threading HTTP server, so a
service's main loop (threaded or asyncio) never blocks it and a busy main loop never makes
a liveness probe time out. Services add JSON views with `route()`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

# A check returns (ok, detail); detail is shown in the probe's response body.
Check = Callable[[], tuple[bool, str]]
# A route takes the query parameters and returns (status, content type, body).
Route = Callable[[dict[str, list[str]]], tuple[int, str, bytes]]


def json_response(payload: Any, status: int = 200) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(payload, default=str).encode()


class AdminServer:
    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.liveness: list[Check] = []
        self.readiness: list[Check] = []
        self.routes: dict[str, Route] = {}
        # The listener is up from the start (the port is taken at once, /metrics answers),
        # but /healthz and /readyz say "starting" until the service has registered its
        # checks and called open_probes(): no probe passes on checks that are not there yet.
        self._probes_open = threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="admin-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def route(self, path: str, handler: Route) -> None:
        self.routes[path] = handler

    def open_probes(self) -> None:
        """The service's liveness and readiness checks are in place: from now on they
        decide /healthz and /readyz."""
        self._probes_open.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _probe(self, checks: list[Check]) -> tuple[int, str, bytes]:
        failures = []
        for check in checks:
            try:
                ok, detail = check()
            except Exception as exc:  # a broken check is a failed check, not a crash
                ok, detail = False, f"check raised {exc!r}"
            if not ok:
                failures.append(detail)
        if failures:
            return 503, "text/plain; charset=utf-8", ("\n".join(failures) + "\n").encode()
        return 200, "text/plain; charset=utf-8", b"ok\n"

    def _dispatch(self, raw_path: str) -> tuple[int, str, bytes]:
        url = urlsplit(raw_path)
        if url.path in ("/healthz", "/readyz") and not self._probes_open.is_set():
            return 503, "text/plain; charset=utf-8", b"starting: checks not registered yet\n"
        if url.path == "/healthz":
            return self._probe(self.liveness)
        if url.path == "/readyz":
            return self._probe(self.readiness)
        if url.path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        handler = self.routes.get(url.path)
        if handler is None:
            return 404, "text/plain; charset=utf-8", b"not found\n"
        return handler(parse_qs(url.query))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                try:
                    status, content_type, body = server._dispatch(self.path)
                except Exception:
                    log.exception("admin route failed", extra={"path": self.path})
                    status, content_type, body = 500, "text/plain", b"internal error\n"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would drown the service's own logs

        return Handler
