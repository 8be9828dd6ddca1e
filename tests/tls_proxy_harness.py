"""The tls-proxy in the test's own process (one worker, in a thread with its own loop) in
front of an echo upstream that answers every request with what it received, so a test
can see exactly which headers the app got."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from patterns.security.tls_proxy.config import Config, load_config
from patterns.security.tls_proxy.counters import SharedCounters
from patterns.security.tls_proxy.server import run_worker
from tests.conftest import free_port, wait_until
from tests.tls_certs import CA


class EchoHandler(BaseHTTPRequestHandler):
    """Answers JSON: the request line's parts, every header as received (in order,
    duplicates kept) and the body, de-chunked."""

    protocol_version = "HTTP/1.1"

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _echo(self) -> None:
        body = self._body()
        payload = json.dumps({
            "method": self.command, "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("latin-1"),
        }).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = _echo

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def echo_upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Running:
    config: Config
    counters: SharedCounters
    port: int
    ca: CA
    ca_file: Path
    cert_dir: Path

    def total(self, name: str) -> float:
        return self.counters.total(name)

    def client_context(self, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if cert is not None:
            context.load_cert_chain(*cert)
        return context

    def tls_socket(self, cert: tuple[Path, Path] | None = None,
                   context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
        context = context or self.client_context(cert)
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return context.wrap_socket(raw, server_hostname="localhost")

    def https(self, cert: tuple[Path, Path] | None = None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("localhost", self.port, timeout=10,
                                           context=self.client_context(cert))  # fmt: skip

    def served_serial(self) -> str:
        with self.tls_socket() as sock:
            der = sock.getpeercert(binary_form=True)
        from cryptography import x509

        return format(x509.load_der_x509_certificate(der).serial_number, "x")


def echo(response: http.client.HTTPResponse) -> dict[str, Any]:
    assert response.status == 200, response.read()
    return json.loads(response.read())


@contextmanager
def in_process_proxy(tmp_path: Path, upstream_port: int, ca: CA | None = None,
                     env: Mapping[str, str] | None = None) -> Iterator[Running]:
    """A proxy worker on a free port with a fresh certificate from `ca`."""
    ca = ca or CA()
    cert_dir = tmp_path / "tls"
    ca_file = ca.write(tmp_path / "ca.crt")
    ca.install(cert_dir, ca.issue())
    port = free_port()
    config = load_config({
        "PROXY_LISTEN": f"127.0.0.1:{port}",
        "PROXY_UPSTREAM": f"127.0.0.1:{upstream_port}",
        "PROXY_CERT_DIR": str(cert_dir),
        "PROXY_WORKERS": "1",
        "PROXY_RELOAD_SECONDS": "0.05",
        **(env or {}),
    })  # fmt: skip
    counters = SharedCounters(1)
    wakers: list[Any] = []
    thread = threading.Thread(target=run_worker, args=(config, counters, 0, wakers.append),
                              daemon=True)  # fmt: skip
    thread.start()
    running = Running(config, counters, port, ca, ca_file, cert_dir)
    wait_until(lambda: counters.row(0).get("alive") == 1, what="the proxy to listen")
    try:
        yield running
    finally:
        for wake in wakers:
            wake()
        thread.join(timeout=30)
