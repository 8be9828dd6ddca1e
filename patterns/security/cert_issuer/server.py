"""The issuer's HTTPS API: `POST /v1/certificates` (see the lab guide).

Built on asyncio streams and the standard library's ssl, with the admin server's
discipline (patterns/common/admin.py), because any peer of the network can reach it:
- at most MAX_CONNECTIONS connections, TLS handshake included: when the table is full the
  oldest is closed to make room, so idle or trickling peers cannot lock a caller out;
- one deadline, REQUEST_TIMEOUT, from accept to the request's last byte (handshake, head
  and body, however slowly they come), and one for taking the response;
- a head of at most MAX_HEAD_BYTES (431 past it), a body of at most MAX_BODY_BYTES
  announced by Content-Length (413 before reading it; no chunked bodies);
- one request per connection (the renewer makes one per renewal).
Each close by a limit is counted in `issuer_connections_closed_total{reason}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus

from prometheus_client import Gauge

from patterns.common.http_headers import NO_STORE, NOSNIFF, STRICT_POLICY
from patterns.common.metrics import counter_by
from patterns.common.service import Runtime
from patterns.security import pki

from .ca import CertificateAuthority
from .config import Config
from .policy import Refusal, authorize, parse

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
REQUEST_TIMEOUT = 10.0
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
# What is read and dropped of a refused body so the refusal reaches its caller.
MAX_DISCARD_BYTES = 1024 * 1024
PATH = "/v1/certificates"
RESULTS = (
    "issued", "unauthorized", "forbidden_name", "lifetime_too_long", "invalid_csr",
    "bad_request", "too_large", "not_found", "method_not_allowed",
)
CLOSE_REASONS = ("evicted", "request_timeout", "handshake_failed", "bad_request", "too_large")


@dataclass
class _Request:
    method: str
    path: str
    headers: dict[str, str]


class Issuer:
    def __init__(self, config: Config, ca: CertificateAuthority, runtime: Runtime) -> None:
        self.config = config
        self.ca = ca
        self.requests = counter_by(
            "issuer_requests", "API requests by result.", "result", RESULTS, runtime.registry
        )
        self.closed = counter_by(
            "issuer_connections_closed",
            "API connections closed by a limit, by reason.",
            "reason", CLOSE_REASONS, runtime.registry,
        )
        self.open_gauge = Gauge(
            "issuer_connections_open", "API connections open.", registry=runtime.registry
        )
        self.open_gauge.set_function(lambda: len(self._connections))
        Gauge(
            "issuer_ca_expiry_seconds", "Seconds until the CA certificate's notAfter.",
            registry=runtime.registry,
        ).set_function(lambda: self.ca.info.seconds_left())
        self._connections: dict[asyncio.Task[None], float] = {}  # task -> accepted at
        self._context, self._renew_context_at = ca.serving_context(config.server_names)
        self.listening = False

    def context(self) -> ssl.SSLContext:
        if datetime.now(UTC) >= self._renew_context_at:
            self._context, self._renew_context_at = self.ca.serving_context(
                self.config.server_names
            )
            log.info("serving certificate renewed")
        return self._context

    # --- connections ----------------------------------------------------------------

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= MAX_CONNECTIONS:
            oldest = min(self._connections, key=self._connections.__getitem__)
            del self._connections[oldest]
            oldest.cancel()
            self.closed.labels(reason="evicted").inc()
        self._connections[task] = time.monotonic()
        peer = writer.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) else str(peer)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                try:
                    await writer.start_tls(self.context())
                except (ssl.SSLError, ConnectionError, OSError):
                    self.closed.labels(reason="handshake_failed").inc()
                    return
                status, body, unread = await self._request(reader, address)
            writer.write(_response(status, body))
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await writer.drain()
                # A refused body still on its way is read and dropped (up to a bound):
                # closing with unread input resets the connection, and the caller could
                # lose the answer that says why.
                while unread > 0 and (chunk := await reader.read(min(unread, 64 * 1024))):
                    unread -= len(chunk)
                writer.close()
                await writer.wait_closed()
        except TimeoutError:
            self.closed.labels(reason="request_timeout").inc()
        except (ConnectionError, OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass  # the peer went away
        except asyncio.CancelledError:
            pass  # evicted, or the server stops (see admin.py on Python 3.11)
        finally:
            self._connections.pop(task, None)
            writer.transport.abort()

    async def _request(
        self, reader: asyncio.StreamReader, address: str
    ) -> tuple[int, bytes, int]:
        """Read and answer one request: (status, JSON body, body bytes left unread)."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            self.closed.labels(reason="too_large").inc()
            return self._refuse(Refusal(431, "bad_request", "request head too large"), address)
        request = _parse_head(head)
        if request is None:
            self.closed.labels(reason="bad_request").inc()
            return self._refuse(Refusal(400, "bad_request", "malformed HTTP request"), address)
        if request.path != PATH:
            return self._refuse(Refusal(404, "not_found", f"no such path; use POST {PATH}"),
                                address)
        if request.method != "POST":
            return self._refuse(
                Refusal(405, "method_not_allowed", f"use POST {PATH}"), address
            )
        if "transfer-encoding" in request.headers:
            return self._refuse(
                Refusal(400, "bad_request", "send the body with Content-Length, not chunked"),
                address,
            )
        length_text = request.headers.get("content-length", "")
        if not length_text.isdigit():
            return self._refuse(Refusal(411, "bad_request", "Content-Length is required"),
                                address)
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            self.closed.labels(reason="too_large").inc()
            return self._refuse(
                Refusal(413, "too_large", f"the body is over {MAX_BODY_BYTES} bytes"),
                address,
                unread=min(length, MAX_DISCARD_BYTES),
            )
        body = await reader.readexactly(length)
        try:
            authorize(request.headers.get("authorization"), self.config.read_token())
            wanted = parse(body, self.config.max_lifetime_seconds, self.config.allowed_names)
        except Refusal as refusal:
            return self._refuse(refusal, address)
        issued = self.ca.sign(wanted.csr.public_key(), wanted.names, wanted.lifetime_seconds)
        self.requests.labels(result="issued").inc()
        log.info(
            "certificate issued",
            extra={
                "client": address,
                "serial": issued.info.serial,
                "dns_names": list(wanted.names),
                "lifetime_seconds": wanted.lifetime_seconds,
                "not_after": pki.rfc3339(issued.info.not_after),
            },
        )
        return 201, json.dumps(
            {
                "certificate": issued.pem.decode(),
                "ca": self.ca.cert_pem.decode(),
                "serial": issued.info.serial,
                "not_before": pki.rfc3339(issued.info.not_before),
                "not_after": pki.rfc3339(issued.info.not_after),
            }
        ).encode(), 0

    def _refuse(self, refusal: Refusal, address: str, unread: int = 0) -> tuple[int, bytes, int]:
        self.requests.labels(result=refusal.result).inc()
        log.warning(
            "request refused",
            extra={"client": address, "status": refusal.status, "result": refusal.result,
                   "error": refusal.error},
        )
        return refusal.status, json.dumps({"error": refusal.error}).encode(), unread

    # --- running --------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        server = await asyncio.start_server(
            self.connection,
            self.config.listen_host,
            self.config.listen_port,
            limit=MAX_HEAD_BYTES,
            backlog=128,
        )
        self.listening = True
        log.info("listening", extra={"listen": f"{self.config.listen_host}:"
                                               f"{self.config.listen_port}",
                                     "ca_serial": self.ca.info.serial})
        await stop.wait()
        self.listening = False
        server.close()
        for task in list(self._connections):
            task.cancel()
        await server.wait_closed()


def _parse_head(head: bytes) -> _Request | None:
    request_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        return None
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            return None
        key = name.lower()
        if key in headers and key in ("content-length", "authorization", "transfer-encoding"):
            return None  # two of them: which one counts is ambiguous
        headers[key] = value.strip()
    return _Request(method=parts[0], path=parts[1].partition("?")[0], headers=headers)


def _response(status: int, body: bytes) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        f"Cache-Control: {NO_STORE}",
        f"X-Content-Type-Options: {NOSNIFF}",
        f"Content-Security-Policy: {STRICT_POLICY}",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
