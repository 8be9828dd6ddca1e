"""An asyncio Forward protocol server.

Accepts all four carrier modes, runs the shared-key handshake when a key is set, and acks
a request (`{"ack": chunk}`) only after the handler has returned, i.e. after the events
are stored. A request that breaks the protocol or a limit closes only its own connection;
it is logged with the peer and the reason and counted.

Nobody can hold the server for others:

- a request must arrive whole within `frame_timeout` of its first byte (the handshake's
  PING within `handshake_timeout` of the connection): a trickle of bytes does not reset
  it, unlike the `idle_timeout` between requests;
- when all `max_connections` are taken, a new connection makes room: the connection idle
  the longest is closed, else the one whose request started the longest ago; connections
  whose request is being decoded or stored are never closed for room;
- bytes of requests not yet decoded are bounded over all connections by
  `max_buffered_bytes`: past it, the connection whose request started the longest ago
  is closed (the reader itself, if that is it).

Memory is bounded: bytes waiting are at most `max_buffered_bytes` (held twice at worst,
see protocol.Framer), plus up to ~0.4 MiB per connection in socket buffers; only
`max_inflight_requests` requests are decoded and stored at a time, each within the
limits (max_frame_bytes, max_decompressed_bytes, max_entries, max_values).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

from prometheus_client import CollectorRegistry, Counter, Gauge

from patterns.common.forward import protocol
from patterns.common.forward.protocol import Event, Limits, ProtocolError

log = logging.getLogger(__name__)

Handler = Callable[[str, list[Event]], Awaitable[None]]

_READ_SIZE = 64 * 1024
_MAX_TAG_LABELS = 100  # tags are client-chosen: cap the metrics' label cardinality


# glibc's malloc by default returns a freed block of 128 KiB or more to the kernel at once
# (and, once such a block was freed, trims the heap past twice its size), so the buffers
# of every request (the framer's bytes, msgpack's, the entries: a few hundred KiB each for
# a shipper's request) were new pages again for each request: ~165 page faults per 2,000
# lines, a fifth of the collector's CPU per line. Blocks under _MMAP_THRESHOLD come from
# the heap instead, and up to _TRIM_THRESHOLD bytes of it stay free for the next request;
# larger blocks (a request past the default limits) still go back to the kernel at once.
_MMAP_THRESHOLD = 4 * 1024 * 1024
_TRIM_THRESHOLD = 8 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_request_buffers() -> bool:
    """Tune glibc's malloc for a process that serves Forward requests (see above); once, at
    start. False where the C library has no mallopt (musl): nothing changes there."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )


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
        self.evicted = Counter(
            f"{prefix}_evicted_connections_total",
            "Connections closed to make room for a new connection, by what they were "
            "doing: idle (between requests) or receiving (a request not yet complete).",
            ["state"],
            registry=registry,
        )
        self.buffered = Gauge(
            f"{prefix}_buffered_bytes",
            "Bytes of requests received and not yet decoded, over all connections.",
            registry=registry,
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


def _take_failure(conn: _Connection) -> Exception:
    """The failure to raise, no longer held by the connection: a raised exception's
    traceback holds the frame that holds `conn`, and through it the request's events,
    which only the cycle collector would then free."""
    failure, conn.failure = conn.failure or ProtocolError("store_failed"), None
    return failure


class _Gone(Exception):
    """The connection was closed to make room for another: stop serving it. (Besides
    cancelling its task: in Python 3.11 wait_for can swallow a cancellation that arrives
    just as the read it waits for completes.)"""


@dataclass(eq=False)
class _Connection:
    task: asyncio.Task[None]
    writer: asyncio.StreamWriter
    peer: str
    framer: protocol.Framer
    last_active: float  # loop time it was accepted or last completed a request
    # Loop time the request being received (or the handshake) started; None when idle.
    started: float | None = None
    # Decoding or storing a request (or waiting to): never closed to make room.
    busy: bool = False
    held: int = 0  # bytes counted in the server's buffered total
    in_hand: int = 0  # bytes of a complete request taken from the framer, not decoded
    # Set when a request of this connection could not be stored: the connection closes.
    failure: Exception | None = None
    gone: bool = False  # closed to make room; out of the table and the buffered total


@dataclass(frozen=True)
class ServerOptions:
    shared_key: str | None = None
    # username -> password; when set, clients must also authenticate (needs shared_key).
    users: dict[str, str] = field(default_factory=dict)
    server_hostname: str = field(default_factory=socket.gethostname)
    limits: Limits = protocol.DEFAULT_LIMITS
    idle_timeout: float = 600.0  # a connection silent this long between requests is closed
    handshake_timeout: float = 10.0  # from the connection to a complete PING
    frame_timeout: float = 10.0  # from a request's first byte to its last
    max_connections: int = 64
    # Bytes of requests not yet decoded, over all connections.
    max_buffered_bytes: int = 16 * 1024 * 1024
    # Requests decoded and waiting for the handler at once, over all connections.
    max_inflight_requests: int = 2
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
        idle_timeout: float = ServerOptions.idle_timeout,
        handshake_timeout: float = ServerOptions.handshake_timeout,
        frame_timeout: float = ServerOptions.frame_timeout,
        max_connections: int = ServerOptions.max_connections,
        max_buffered_bytes: int = ServerOptions.max_buffered_bytes,
        max_inflight_requests: int = ServerOptions.max_inflight_requests,
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
            frame_timeout=frame_timeout,
            max_connections=max_connections,
            max_buffered_bytes=max_buffered_bytes,
            max_inflight_requests=max_inflight_requests,
            udp_heartbeat=udp_heartbeat,
        )
        if self.options.users and not self.options.shared_key:
            raise ValueError("username/password authentication needs a shared key")
        if max_buffered_bytes < limits.max_frame_bytes:
            raise ValueError("max_buffered_bytes must hold a request of max_frame_bytes")
        self.metrics = metrics
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._inflight = asyncio.Semaphore(self.options.max_inflight_requests)
        self._buffered = 0  # sum of every connection's `held`
        self._freed = asyncio.Event()  # set when buffered bytes were released
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
        if self._stopping:
            writer.close()
            return
        if len(self._connections) >= self.options.max_connections and not self._make_room():
            self._reject(
                peer,
                ProtocolError("too_many_connections", "every connection is busy storing"),
            )
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = asyncio.current_task()
        assert task is not None
        now = asyncio.get_running_loop().time()
        framer = protocol.Framer(self.options.limits.max_frame_bytes)
        conn = _Connection(task, writer, peer, framer, now)
        self._connections[task] = conn
        if self.metrics:
            self.metrics.connections.inc()
        try:
            if self.options.shared_key is not None and not await self._handshake(
                reader, writer, conn
            ):
                return
            await self._transport(reader, writer, conn)
        except ProtocolError as exc:
            self._reject(peer, exc)
        except (_StoreFailed, _Gone):
            pass
        except TimeoutError:
            log.info("closing idle connection", extra={"peer": peer})
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the peer went away; anything it sent without an ack it will resend
        except asyncio.CancelledError:
            pass  # stop(), or closed to make room: idle, or past the grace period
        finally:
            self._forget(conn)
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

    # --- room for others ------------------------------------------------------------------

    def _forget(self, conn: _Connection) -> None:
        """Take a connection out of the table and the buffered total (once)."""
        if self._connections.pop(conn.task, None) is None:
            return
        if self.metrics:
            self.metrics.connections.dec()
        conn.framer = protocol.Framer(self.options.limits.max_frame_bytes)  # drop its bytes
        conn.in_hand = 0
        self._account(conn)
        conn.gone = True

    def _account(self, conn: _Connection) -> None:
        """Bring the buffered total up to date with what `conn` holds now."""
        if conn.gone:
            raise _Gone
        held = conn.framer.held + conn.in_hand
        if held < conn.held:
            self._freed.set()
        self._buffered += held - conn.held
        conn.held = held
        if self.metrics:
            self.metrics.buffered.set(self._buffered)

    def _make_room(self) -> bool:
        """Close one connection for a new one: idle the longest, else receiving a request
        that started the longest ago. False if every connection is busy."""
        idle = [c for c in self._connections.values() if not c.busy and c.started is None]
        if idle:
            self._evict(min(idle, key=lambda c: c.last_active), "idle")
            return True
        receiving = [c for c in self._connections.values() if not c.busy and c.started]
        if receiving:
            self._evict(min(receiving, key=lambda c: cast(float, c.started)), "receiving")
            return True
        return False

    def _evict(self, conn: _Connection, state: str) -> None:
        log.info(
            "closing a connection to make room for another",
            extra={"peer": conn.peer, "state": state, "buffered_bytes": conn.held},
        )
        if self.metrics:
            self.metrics.evicted.labels(state=state).inc()
        self._forget(conn)
        conn.writer.transport.abort()  # its socket buffers go now, not at its next step
        conn.task.cancel()

    async def _reserve(self, conn: _Connection, size: int, deadline: float) -> None:
        """Make room for `size` more buffered bytes for `conn`: close the connection whose
        partial request started the longest ago (that may be `conn`) while the total would
        pass max_buffered_bytes; wait if every other holder is busy."""
        loop = asyncio.get_running_loop()
        while self._buffered + size > self.options.max_buffered_bytes:
            holders = [
                c
                for c in self._connections.values()
                if c.held and c.started is not None and (c is conn or not c.busy)
            ]
            if holders:
                oldest = min(holders, key=lambda c: cast(float, c.started))
                if oldest is conn:
                    raise ProtocolError(
                        "buffers_full",
                        f"requests waiting exceed {self.options.max_buffered_bytes} bytes "
                        "and this one started first",
                    )
                self._evict(oldest, "receiving")
                continue
            # Everything held is being decoded or stored: it is released soon.
            self._freed.clear()
            try:
                await asyncio.wait_for(self._freed.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise ProtocolError(
                    "frame_timeout", "no room for the request before its deadline"
                ) from None

    async def _receive(
        self, reader: asyncio.StreamReader, conn: _Connection, deadline: float | None
    ) -> bool:
        """Read more of the stream into the connection's framer; False when the peer
        closed. With `deadline` (loop time) a request is under way and must be complete
        by then; without one the connection is idle and may stay so for idle_timeout."""
        loop = asyncio.get_running_loop()
        if deadline is None:
            data = await asyncio.wait_for(reader.read(_READ_SIZE), self.options.idle_timeout)
        else:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                data = await asyncio.wait_for(reader.read(_READ_SIZE), remaining)
            except TimeoutError:
                raise ProtocolError(
                    "frame_timeout", "the request did not arrive whole before its deadline"
                ) from None
        if conn.gone:
            raise _Gone
        if not data:
            return False
        if self.metrics:
            self.metrics.bytes.inc(len(data))
        if conn.started is None:
            conn.started = loop.time()
            deadline = conn.started + self.options.frame_timeout
        assert deadline is not None
        await self._reserve(conn, len(data), deadline)
        if conn.gone:
            raise _Gone
        conn.framer.feed(data)
        self._account(conn)
        return True

    # --- handshake and transport ----------------------------------------------------------

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Connection
    ) -> bool:
        options = self.options
        assert options.shared_key is not None
        loop = asyncio.get_running_loop()
        conn.started = loop.time()  # the handshake is under way: counted as receiving
        deadline = conn.started + options.handshake_timeout
        nonce = os.urandom(16)
        auth_salt = os.urandom(16) if options.users else b""
        writer.write(protocol.encode_helo(nonce, auth_salt))
        while (frame := conn.framer.next_frame()) is None:
            try:
                if not await self._receive(reader, conn, deadline):
                    return False
            except ProtocolError as exc:
                if exc.reason != "frame_timeout":
                    raise
                raise ProtocolError(
                    "bad_handshake", "no PING within the handshake timeout"
                ) from None
        self._account(conn)
        try:
            ping = protocol.decode_ping(protocol.unpack(frame, options.limits))
        except ProtocolError as exc:
            if exc.reason != "bad_msgpack":
                # A message, but not a valid PING: say so as the spec's PONG does.
                await self._pong(writer, False, "invalid ping message", "")
            raise
        reason = protocol.check_ping(ping, nonce, options.shared_key, auth_salt, options.users)
        if reason:
            await self._pong(writer, False, reason, "")
            self._reject(
                conn.peer,
                ProtocolError("auth_failed", f"{reason} (client {ping.client_hostname!r})"),
            )
            return False
        digest = protocol.shared_key_digest(
            ping.shared_key_salt, options.server_hostname, nonce, options.shared_key
        )
        await self._pong(writer, True, "", digest)
        conn.started = loop.time() if conn.framer.receiving else None
        return True

    async def _pong(
        self, writer: asyncio.StreamWriter, result: bool, reason: str, digest: str
    ) -> None:
        writer.write(protocol.encode_pong(result, reason, self.options.server_hostname, digest))
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(writer.drain(), self.options.handshake_timeout)

    async def _transport(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Connection
    ) -> None:
        limits = self.options.limits
        loop = asyncio.get_running_loop()
        # This connection's requests without `chunk` that are still being stored.
        unacked: list[asyncio.Task[bool]] = []
        while not self._stopping:
            if conn.gone:
                raise _Gone
            if conn.failure is not None:
                raise _take_failure(conn)
            frame = conn.framer.next_frame()
            if frame is None:
                conn.busy = False
                deadline = None
                if conn.started is not None:
                    deadline = conn.started + self.options.frame_timeout
                if not await self._receive(reader, conn, deadline):
                    return
                conn.busy = True
                continue
            # A whole request: the next one (if its first bytes came along) starts now.
            conn.in_hand = len(frame)
            now = loop.time()
            conn.started = now if conn.framer.receiving else None
            # Decoded events are the bulk of a request's memory: only so many at once. The
            # slot is held until the request is stored.
            await self._inflight.acquire()
            try:
                request = protocol.decode_frame(frame, limits)
            except BaseException:
                self._inflight.release()
                raise
            finally:
                del frame
                conn.in_hand = 0
                self._account(conn)
            if request is None:
                self._inflight.release()
                continue  # heartbeat: not activity that keeps a connection from giving way
            conn.last_active = now
            if request.chunk is None:
                # No ack asked (fluent-logger's Message mode): read on while it is stored,
                # so a stream of small requests shares fsyncs. The store keeps the order.
                task = asyncio.create_task(self._store(request, conn))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                unacked[:] = [t for t in unacked if not t.done()] + [task]
                continue
            # An ack covers everything sent before it on this connection.
            if unacked:
                await asyncio.gather(*unacked)
                unacked.clear()
            if not await self._store(request, conn):
                raise _take_failure(conn)
            writer.write(protocol.encode_ack(request.chunk))
            if self.metrics:
                self.metrics.acks.inc()
            await self._drain(writer, conn)

    async def _drain(self, writer: asyncio.StreamWriter, conn: _Connection) -> None:
        """Wait until the client reads its acks, as long as a request may take to arrive;
        meanwhile the connection may give way like one receiving a request."""
        started, conn.started = conn.started, conn.started or asyncio.get_running_loop().time()
        conn.busy = False
        try:
            await asyncio.wait_for(writer.drain(), self.options.frame_timeout)
        except TimeoutError:
            raise ProtocolError("frame_timeout", "the client does not read its acks") from None
        conn.busy = True
        conn.started = started

    async def _store(self, request: protocol.Request, conn: _Connection) -> bool:
        """Run the handler for a request holding an in-flight slot, then release it.
        False (and conn.failure set, so the connection closes) if it was not stored."""
        try:
            await self.handler(request.tag, request.events)
        except ProtocolError as exc:
            # The handler found the request itself unacceptable: a rejection. Without its
            # traceback, whose frames hold the request's events (and the store's batch).
            conn.failure = exc.with_traceback(None)
            return False
        except Exception:
            # Not stored, so not acked: closing makes the client send it again.
            log.exception("storing events failed", extra={"peer": conn.peer, "tag": request.tag})
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
