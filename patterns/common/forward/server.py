"""An asyncio Forward protocol server.

Accepts all four carrier modes, runs the shared-key handshake when a key is set, and acks
a request (`{"ack": chunk}`) only after the handler has returned, i.e. after the events
are stored. A request that breaks the protocol or a limit closes only its own connection;
it is logged with the peer and the reason and counted. Memory per connection is bounded
by the limits: the unpacker buffer (max_frame_bytes, which also caps every declared
length), the gzip output (max_decompressed_bytes) and the event count (max_entries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import msgpack
from prometheus_client import CollectorRegistry, Counter, Gauge

from patterns.common.forward import protocol
from patterns.common.forward.protocol import Event, Limits, ProtocolError

log = logging.getLogger(__name__)

Handler = Callable[[str, list[Event]], Awaitable[None]]

_READ_SIZE = 256 * 1024
_MAX_TAG_LABELS = 100  # tags are client-chosen: cap the metrics' label cardinality


class ForwardMetrics:
    """Prometheus metrics of a Forward server, on the service's own registry."""

    def __init__(self, registry: CollectorRegistry, prefix: str = "forward") -> None:
        self.events = Counter(
            f"{prefix}_events_received_total",
            "Events received and stored, by carrier mode and tag.",
            ["mode", "tag"],
            registry=registry,
        )
        self.frames = Counter(
            f"{prefix}_frames_received_total",
            "Requests received and stored, by carrier mode and tag.",
            ["mode", "tag"],
            registry=registry,
        )
        self.acks = Counter(f"{prefix}_acks_sent_total", "Acks sent.", registry=registry)
        self.rejected = Counter(
            f"{prefix}_rejected_frames_total",
            "Requests or connections rejected and closed, by reason.",
            ["reason"],
            registry=registry,
        )
        self.bytes = Counter(
            f"{prefix}_received_bytes_total", "Bytes read from clients.", registry=registry
        )
        self.connections = Gauge(
            f"{prefix}_connections", "Open client connections.", registry=registry
        )
        self._tags: set[str] = set()

    def tag_label(self, tag: str) -> str:
        if tag in self._tags:
            return tag
        if len(self._tags) < _MAX_TAG_LABELS:
            self._tags.add(tag)
            return tag
        return "_other"


class _StoreFailed(Exception):
    """The handler failed (already logged and counted): close the connection."""


@dataclass
class _Connection:
    task: asyncio.Task[None]
    busy: bool = False
    # Set when a request of this connection could not be stored: the connection closes.
    failure: Exception | None = None


@dataclass(frozen=True)
class ServerOptions:
    shared_key: str | None = None
    # username -> password; when set, clients must also authenticate (needs shared_key).
    users: dict[str, str] = field(default_factory=dict)
    server_hostname: str = field(default_factory=socket.gethostname)
    limits: Limits = protocol.DEFAULT_LIMITS
    idle_timeout: float = 600.0  # a connection silent this long is closed
    handshake_timeout: float = 10.0
    max_connections: int = 256
    # Requests decoded and waiting for the handler at once, over all connections.
    max_inflight_requests: int = 8
    udp_heartbeat: bool = True


class _HeartbeatProtocol(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data == b"\x00":
            self.transport.sendto(b"\x00", addr)


class ForwardServer:
    """`handler(tag, events)` must have stored the events when it returns; only then is
    the request acked. A handler that finds the request unacceptable raises ProtocolError
    (a rejection, counted under its reason); any other exception counts as `store_failed`.
    Either way the connection is closed without an ack. The keyword arguments are those of
    ServerOptions."""

    def __init__(
        self,
        host: str,
        port: int,
        handler: Handler,
        *,
        shared_key: str | None = None,
        users: dict[str, str] | None = None,
        server_hostname: str | None = None,
        limits: Limits = protocol.DEFAULT_LIMITS,
        idle_timeout: float = 600.0,
        handshake_timeout: float = 10.0,
        max_connections: int = 256,
        max_inflight_requests: int = 8,
        udp_heartbeat: bool = True,
        metrics: ForwardMetrics | None = None,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.handler = handler
        self.options = ServerOptions(
            shared_key=shared_key,
            users=users or {},
            server_hostname=server_hostname or socket.gethostname(),
            limits=limits,
            idle_timeout=idle_timeout,
            handshake_timeout=handshake_timeout,
            max_connections=max_connections,
            max_inflight_requests=max_inflight_requests,
            udp_heartbeat=udp_heartbeat,
        )
        if self.options.users and not self.options.shared_key:
            raise ValueError("username/password authentication needs a shared key")
        self.metrics = metrics
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._inflight = asyncio.Semaphore(self.options.max_inflight_requests)
        self._udp: asyncio.DatagramTransport | None = None
        # Requests without `chunk` being stored after their connection read on.
        self._background: set[asyncio.Task[bool]] = set()
        self._stopping = False

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.requested_port, reuse_address=True
        )
        if self.options.udp_heartbeat:
            # The spec's heartbeat: a 0x00 datagram to the same port, answered with 0x00.
            loop = asyncio.get_running_loop()
            self._udp, _ = await loop.create_datagram_endpoint(
                _HeartbeatProtocol, local_addr=(self.host, self.port), reuse_port=False
            )
        log.info("forward server listening", extra={"host": self.host, "port": self.port})

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting; close idle connections; let requests being handled finish
        (their acks are sent) for up to `grace` seconds; then cancel what is left."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        if self._udp is not None:
            self._udp.close()
        for conn in list(self._connections.values()):
            if not conn.busy:
                conn.task.cancel()
        tasks: list[asyncio.Task[object]] = [conn.task for conn in self._connections.values()]
        tasks += self._background
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        log.info("forward server stopped")

    # --- one connection -------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        if self._stopping or len(self._connections) >= self.options.max_connections:
            self._reject(peer, ProtocolError("too_many_connections", "connection limit reached"))
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = asyncio.current_task()
        assert task is not None
        conn = _Connection(task)
        self._connections[task] = conn
        if self.metrics:
            self.metrics.connections.inc()
        unpacker = protocol.new_unpacker(self.options.limits.max_frame_bytes)
        try:
            if self.options.shared_key is not None and not await self._handshake(
                reader, writer, unpacker, peer
            ):
                return
            await self._transport(reader, writer, unpacker, conn, peer)
        except ProtocolError as exc:
            self._reject(peer, exc)
        except _StoreFailed:
            pass
        except TimeoutError:
            log.info("closing idle connection", extra={"peer": peer})
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the peer went away; anything it sent without an ack it will resend
        except asyncio.CancelledError:
            pass  # stop(): the connection was idle or past the grace period
        finally:
            del self._connections[task]
            if self.metrics:
                self.metrics.connections.dec()
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    def _reject(self, peer: str, exc: ProtocolError) -> None:
        log.warning(
            "rejected client request, closing its connection",
            extra={"peer": peer, "reason": exc.reason, "detail": exc.detail},
        )
        if self.metrics:
            self.metrics.rejected.labels(reason=exc.reason).inc()

    async def _read_into(
        self, reader: asyncio.StreamReader, unpacker: msgpack.Unpacker, timeout: float
    ) -> bool:
        """Read more bytes into the unpacker; False when the peer closed."""
        data = await asyncio.wait_for(reader.read(_READ_SIZE), timeout)
        if not data:
            return False
        if self.metrics:
            self.metrics.bytes.inc(len(data))
        protocol.feed(unpacker, data, self.options.limits.max_frame_bytes)
        return True

    async def _handshake(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        unpacker: msgpack.Unpacker,
        peer: str,
    ) -> bool:
        options = self.options
        assert options.shared_key is not None
        nonce = os.urandom(16)
        auth_salt = os.urandom(16) if options.users else b""
        writer.write(protocol.encode_helo(nonce, auth_salt))
        await writer.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + options.handshake_timeout
        while True:
            obj = protocol.next_object(unpacker)
            if obj is not protocol.NOTHING_YET:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ProtocolError("bad_handshake", "no PING within the handshake timeout")
            try:
                if not await self._read_into(reader, unpacker, remaining):
                    return False
            except TimeoutError:
                raise ProtocolError(
                    "bad_handshake", "no PING within the handshake timeout"
                ) from None
        ping = protocol.decode_ping(obj)
        reason = protocol.check_ping(ping, nonce, options.shared_key, auth_salt, options.users)
        if reason:
            writer.write(protocol.encode_pong(False, reason, options.server_hostname, ""))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            self._reject(
                peer, ProtocolError("auth_failed", f"{reason} (client {ping.client_hostname!r})")
            )
            return False
        digest = protocol.shared_key_digest(
            ping.shared_key_salt, options.server_hostname, nonce, options.shared_key
        )
        writer.write(protocol.encode_pong(True, "", options.server_hostname, digest))
        await writer.drain()
        return True

    async def _transport(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        unpacker: msgpack.Unpacker,
        conn: _Connection,
        peer: str,
    ) -> None:
        limits = self.options.limits
        # This connection's requests without `chunk` that are still being stored.
        unacked: list[asyncio.Task[bool]] = []
        while not self._stopping:
            if conn.failure is not None:
                raise conn.failure
            obj = protocol.next_object(unpacker)
            if obj is protocol.NOTHING_YET:
                conn.busy = False
                if not await self._read_into(reader, unpacker, self.options.idle_timeout):
                    return
                conn.busy = True
                continue
            # Decoded events are the bulk of a request's memory: only so many at once. The
            # slot is held until the request is stored.
            await self._inflight.acquire()
            try:
                request = protocol.decode_request(obj, limits)
            except BaseException:
                self._inflight.release()
                raise
            del obj
            if request is None:
                self._inflight.release()
                continue  # heartbeat
            if request.chunk is None:
                # No ack asked (fluent-logger's Message mode): read on while it is stored,
                # so a stream of small requests shares fsyncs. The store keeps the order.
                task = asyncio.create_task(self._store(request, conn, peer))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                unacked[:] = [t for t in unacked if not t.done()] + [task]
                continue
            # An ack covers everything sent before it on this connection.
            if unacked:
                await asyncio.gather(*unacked)
                unacked.clear()
            if not await self._store(request, conn, peer):
                raise conn.failure or ProtocolError("store_failed")
            writer.write(protocol.encode_ack(request.chunk))
            # A client that never reads its acks must not hold the connection forever.
            await asyncio.wait_for(writer.drain(), self.options.idle_timeout)
            if self.metrics:
                self.metrics.acks.inc()

    async def _store(self, request: protocol.Request, conn: _Connection, peer: str) -> bool:
        """Run the handler for a request holding an in-flight slot, then release it.
        False (and conn.failure set, so the connection closes) if it was not stored."""
        try:
            await self.handler(request.tag, request.events)
        except ProtocolError as exc:
            # The handler found the request itself unacceptable: a rejection.
            conn.failure = exc
            return False
        except Exception:
            # Not stored, so not acked: closing makes the client send it again.
            log.exception("storing events failed", extra={"peer": peer, "tag": request.tag})
            if self.metrics:
                self.metrics.rejected.labels(reason="store_failed").inc()
            conn.failure = _StoreFailed()
            return False
        finally:
            self._inflight.release()
        if self.metrics:
            tag = self.metrics.tag_label(request.tag)
            self.metrics.frames.labels(mode=request.mode, tag=tag).inc()
            self.metrics.events.labels(mode=request.mode, tag=tag).inc(len(request.events))
        return True
