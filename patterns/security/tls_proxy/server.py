"""The proxy's server, one in each worker process (run.py runs the first, worker.py the
others): the listener, the connection table and its limits, the certificate reloads.

Limits, so that no peer can lock others out or grow memory without bound:
- at most PROXY_MAX_CONNECTIONS per worker, handshakes in progress included; when the
  table is full, the connection that has been quiet longest (a stalled handshake, a
  silent or idle peer) is closed to make room for the newcomer;
- a handshake must finish within PROXY_HANDSHAKE_TIMEOUT_SECONDS, a request head within
  PROXY_HEADER_TIMEOUT_SECONDS of its first byte and fit PROXY_MAX_HEADER_BYTES and
  PROXY_MAX_HEADERS (431 otherwise), and a connection with no byte either way for
  PROXY_IDLE_TIMEOUT_SECONDS is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import socket
import ssl
from collections.abc import Callable
from typing import Any

from .certs import CertStore
from .config import Config
from .counters import SLOT, Row, SharedCounters
from .identity import identity_headers
from .relay import CLOSING, HANDSHAKING, ClientConnection, handshake_result

log = logging.getLogger(__name__)

DRAIN_QUIET = 0.5
IDENTITY_CACHE = 4096


def raise_fd_limit() -> None:
    # Each connection holds two sockets; the default soft limit (often 1024) would cap
    # the proxy below PROXY_MAX_CONNECTIONS.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def listen_socket(config: Config) -> socket.socket:
    """The TLS port, with SO_REUSEPORT: every worker binds its own socket to it and the
    kernel spreads new connections over them."""
    family = socket.AF_INET6 if ":" in config.listen_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((config.listen_host, config.listen_port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


class Proxy:
    """One worker: accepts on its own socket, serves its connections, reloads certificates."""

    def __init__(self, config: Config, row: Row, certs: CertStore, first: bool) -> None:
        self.config = config
        self.row = row
        self.slots = row.slots
        self.requests_slot = row.base + SLOT["requests"]
        self.certs = certs
        self.first = first  # the first worker counts the reloads for all (same files)
        self.connections: dict[ClientConnection, None] = {}  # insertion-ordered set
        self.identities: dict[str, bytes] = {}  # client address -> identity() without a cert
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.draining = False

    # --- connections ------------------------------------------------------------------

    def accept(self, connection: ClientConnection) -> ssl.SSLContext | None:
        """Register a new connection; the TLS context its handshake gets (None: refused,
        and its transport aborted)."""
        connections = self.connections
        if len(connections) >= self.config.max_connections:
            # The one quiet longest: a stalled handshake, or an idle or silent peer.
            victim = min(connections, key=lambda c: c.last_activity)
            victim.abort("evicted")
            self.forget(victim)
        context = self.certs.context()
        if context is None or self.draining:
            self.row.add("handshakes:no_certificate" if context is None else "closed:shutdown")
            connection.state = CLOSING
            connection.transport.abort()
            return None
        connections[connection] = None
        self.slots[self.row.base + SLOT["connections_open"]] = len(connections)
        return context

    def identity(self, transport: asyncio.BaseTransport, peer_cert: dict[str, Any] | None
                 ) -> bytes:  # fmt: skip
        """What ends each request head of a connection: the identity headers, then the
        blank line. Without a client certificate they depend on the address alone, so they
        are made once per address (a bounded cache: a flood of addresses only empties it)."""
        peer = transport.get_extra_info("peername")
        client_ip = str(peer[0]) if peer else "-"
        if peer_cert:
            return identity_headers(client_ip, peer_cert) + b"\r\n"
        identities = self.identities
        ending = identities.get(client_ip)
        if ending is None:
            if len(identities) >= IDENTITY_CACHE:
                identities.clear()
            ending = identities[client_ip] = identity_headers(client_ip, None) + b"\r\n"
        return ending

    def forget(self, connection: ClientConnection) -> None:
        if self.connections.pop(connection, False) is None:
            self.slots[self.row.base + SLOT["connections_open"]] = len(self.connections)

    def handshake_done(self, connection: ClientConnection) -> None:
        self.row.add("handshakes:ok")

    def handshake_failed(self, exc: BaseException) -> None:
        result = handshake_result(exc)
        self.row.add(f"handshakes:{result}")
        # Debug only: a flood of bad handshakes must not become a flood of logs.
        log.debug("handshake failed", extra={"result": result, "error": str(exc)[:200]})

    def closed(self, reason: str) -> None:
        self.row.add(f"closed:{reason}")

    def upstream_failed(self, exc: BaseException) -> None:
        log.warning("cannot connect to the upstream", extra={
            "upstream": f"{self.config.upstream_host}:{self.config.upstream_port}",
            "error": str(exc) or type(exc).__name__})  # fmt: skip

    def sweep(self) -> None:
        """Close connections past their header deadline or idle timeout."""
        now = self.loop.time()
        config = self.config
        idle_before = now - config.idle_timeout
        head_before = now - config.header_timeout
        handshake_before = now - config.handshake_timeout
        for connection in list(self.connections):
            if connection.state == HANDSHAKING:
                if connection.accepted < handshake_before:
                    connection.abort("timeout")
                continue
            started = connection.head_started
            if started is not None and started < head_before:
                connection.abort("request_timeout")
            elif connection.last_activity < idle_before:
                connection.abort("idle_timeout")

    # --- certificates -----------------------------------------------------------------

    def reload(self) -> None:
        result = self.certs.poll()
        if result is not None and self.first:
            self.row.add(f"reloads:{result}")
        certificate = self.certs.certificate()
        self.row.set("not_after", certificate.not_after if certificate else 0.0)

    # --- lifecycle ----------------------------------------------------------------------

    async def serve(self, sock: socket.socket, stop: asyncio.Event,
                    tick: Callable[[], None] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.set_exception_handler(_quiet_exceptions)
        self.reload()
        server = await self.loop.create_server(lambda: ClientConnection(self), sock=sock,
                                               backlog=4096)
        self.row.set("alive", 1)
        config = self.config
        interval = min(1.0, config.reload_seconds, config.handshake_timeout / 4,
                       config.header_timeout / 4, config.idle_timeout / 4)
        since_reload = 0.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stop.wait()
            self.sweep()
            since_reload += interval
            if since_reload >= self.config.reload_seconds:
                since_reload = 0.0
                self.reload()
            if tick is not None:
                tick()
        await self.drain(server)
        self.row.set("alive", 0)

    async def drain(self, server: asyncio.Server) -> None:
        """Stop accepting; let open connections finish for up to PROXY_DRAIN_SECONDS.
        A connection quiet for DRAIN_QUIET seconds is between requests: closed then."""
        server.close()
        self.draining = True
        deadline = self.loop.time() + self.config.drain_timeout
        while self.connections and self.loop.time() < deadline:
            quiet_since = self.loop.time() - DRAIN_QUIET
            for connection in list(self.connections):
                if connection.state == HANDSHAKING or (
                        connection.head_started is None and connection.last_activity < quiet_since):
                    connection.abort("shutdown")
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort("shutdown")


def _quiet_exceptions(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    # A peer that resets or sends garbage ends up here through the TLS layer: that is
    # the peer's business (counted as a handshake result), not a stack trace in the log.
    exc = context.get("exception")
    if isinstance(exc, (OSError, ssl.SSLError, asyncio.CancelledError)):
        log.debug("connection error", extra={"error": str(exc)})
        return
    loop.default_exception_handler(context)


def run_worker(config: Config, counters: SharedCounters, index: int, stop_hook:
               Callable[[Callable[[], None]], None], tick: Callable[[], None] | None = None,
               certs: CertStore | None = None) -> None:
    """Serve as worker `index` until stopped; `stop_hook(wake)` registers how a signal
    wakes the loop."""
    raise_fd_limit()
    certs = certs or CertStore(config.cert_dir, config.client_ca_file)
    proxy = Proxy(config, counters.row(index), certs, first=index == 0)
    sock = listen_socket(config)
    # What was loaded so far lives as long as the worker: out of the garbage collector's
    # sight, its collections only walk what connections allocate.
    gc.freeze()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(stop.set)

        stop_hook(wake)
        await proxy.serve(sock, stop, tick)

    if config.event_loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
