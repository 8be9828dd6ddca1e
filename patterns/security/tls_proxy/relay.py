"""One client connection: its TLS handshake, its request heads rewritten, its bytes relayed.

A connection is accepted by the proxy itself and registered at once (so the server's
limits see handshakes in progress too), then handed to the loop with the TLS context of
that moment: a certificate switch later never touches it.

Requests go through httptools (llhttp) as they arrive: every head is rebuilt without the
headers a client may not set (identity.py) and with the proxy's own, then bodies follow
as the parser delivers them (Content-Length bodies as they are, chunked ones re-framed
chunk by chunk, trailers dropped). Nothing is parsed in Python byte by byte; the app's
responses are passed back as bytes. One upstream connection per client connection,
opened at its first request: the app sees the requests of one client on one connection,
in order, and its responses need no parsing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from http import HTTPStatus
from typing import TYPE_CHECKING

import httptools

from .identity import identity_headers, stripped

if TYPE_CHECKING:
    from .server import Proxy

HANDSHAKING, OPEN, CLOSING = 0, 1, 2
# After a refusal (431, 400...), what the client still sends is read and dropped, up to
# this much, until it has been quiet LINGER seconds: closing with its bytes unread would
# reset the connection and could lose the answer before the client reads it.
DISCARD_LIMIT = 1024 * 1024
LINGER = 1.0


class Refusal(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def error_response(status: int) -> bytes:
    phrase = HTTPStatus(status).phrase
    body = f"{status} {phrase}\n".encode()
    return (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def handshake_result(exc: BaseException) -> str:
    """The proxy_handshakes_total result of a failed handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "bad_client_certificate"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "no_client_certificate"
        if "CERTIFICATE" in reason and "VERIFY" in reason:
            return "bad_client_certificate"
        return "failed"
    if isinstance(exc, (TimeoutError, ConnectionAbortedError)) and "longer" in str(exc):
        return "timeout"  # uvloop and asyncio abort a handshake past its timeout this way
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "failed"


class Upstream(asyncio.Protocol):
    """The app's side of one client connection: whatever it sends goes to the client."""

    def __init__(self, client: ClientConnection) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        client = self.client
        client.last_activity = client.loop.time()
        client.transport.write(data)

    def eof_received(self) -> bool:
        self.client.upstream_closed()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream_closed()

    # The client's TLS write buffer is full: stop reading the app until it drains.
    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client.transport.resume_reading()


class ClientConnection(asyncio.Protocol):
    """A client connection, from accept to close. Also httptools' callback object."""

    def __init__(self, proxy: Proxy, sock: socket.socket, client_ip: str) -> None:
        self.proxy = proxy
        self.sock: socket.socket | None = sock  # until the handshake is done
        self.loop = proxy.loop
        self.state = HANDSHAKING
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.accepted = self.last_activity = self.loop.time()
        self.client_ip = client_ip
        self.identity = b""
        self.parser: httptools.HttpRequestParser | None = None
        self.upstream: Upstream | None = None
        self.pending: list[bytes] | None = None  # request bytes while the upstream connects
        # The head being read: since when (None between requests), its size and fields.
        self.head_started: float | None = None
        self.head_size = 0
        self.head_fields = 0
        self.head: list[bytes] = []
        self.url = b""
        self.chunked = False
        self.discarded = 0
        self.error: bytes | None = None  # a refusal to send once the app is done
        self.linger: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None  # the handshake, then the app's connect

    # --- accept and handshake --------------------------------------------------------

    async def handshake(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        """TLS on an accepted socket, with the context of this moment; connection_made
        follows when it is done. The socket is the loop's from the first await on: until
        then no byte of it is read, so none can be missed."""
        try:
            await self.loop.connect_accepted_socket(
                lambda: self, sock, ssl=context,
                ssl_handshake_timeout=self.proxy.config.handshake_timeout)  # fmt: skip
        except Exception as exc:
            if self.state == HANDSHAKING:  # not a connection the proxy closed itself
                self.state = CLOSING
                self.proxy.handshake_failed(exc)
            self.proxy.forget(self)
            with contextlib.suppress(OSError):
                sock.close()  # if the loop never took it over (it detaches it otherwise)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The handshake is done."""
        self.transport = transport  # type: ignore[assignment]
        self.sock = None
        if self.state != HANDSHAKING:  # evicted while the handshake finished
            transport.abort()  # type: ignore[attr-defined]
            return
        self.state = OPEN
        ssl_object = transport.get_extra_info("ssl_object")
        peer_cert = ssl_object.getpeercert() if ssl_object is not None else None
        self.identity = identity_headers(self.client_ip, peer_cert or None)
        self.parser = httptools.HttpRequestParser(self)
        self.proxy.handshake_done(self)

    # --- client bytes ----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        parser = self.parser
        if parser is None:
            self._discard(len(data))
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            context = exc.__context__
            if isinstance(context, Refusal):
                self.refuse(context.status, context.reason)
            else:
                raise
            return
        except httptools.HttpParserUpgrade:
            self.refuse(501, "not_implemented")
            return
        except httptools.HttpParserError:
            self.refuse(400, "bad_request")
            return
        # A head still incomplete after this read: the callbacks count what the parser
        # passed on; this bounds what it may be holding back inside one field.
        if self.head_started is not None:
            self.head_size += len(data)
            if self.head_size > 2 * self.proxy.config.max_header_bytes:
                self.refuse(431, "too_large")

    def eof_received(self) -> bool:
        # TLS has no half-close: the client is done, so is the connection.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSING
        self.parser = None
        if self.linger is not None:
            self.linger.cancel()
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.close()
        self.proxy.forget(self)

    # The app's writes back up behind a slow client: stop reading the client.
    def pause_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.resume_reading()

    # --- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self.head_started = self.last_activity
        self.head_size = 0
        self.head_fields = 0
        self.head = []
        self.url = b""
        self.chunked = False

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if self.head_size > self.proxy.config.max_header_bytes:
            raise Refusal(431, "too_large")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_started is None:
            return  # a trailer after a chunked body: dropped
        self.head_fields += 1
        self.head_size += len(name) + len(value) + 4
        config = self.proxy.config
        if self.head_size > config.max_header_bytes or self.head_fields > config.max_headers:
            raise Refusal(431, "too_large")
        if stripped(name):
            return
        if len(name) == 17 and name.lower() == b"transfer-encoding":
            self.chunked = True
        self.head.append(name + b": " + value + b"\r\n")

    def on_headers_complete(self) -> None:
        self.head_started = None
        parser = self.parser
        assert parser is not None
        if parser.should_upgrade():  # Upgrade or CONNECT: this proxy relays HTTP/1.1 only
            raise Refusal(501, "not_implemented")
        start = b"%s %s HTTP/%s\r\n" % (
            parser.get_method(), self.url, parser.get_http_version().encode())
        self.head.insert(0, start)
        self.head.append(self.identity)
        self.head.append(b"\r\n")
        proxy = self.proxy
        proxy.slots[proxy.requests_slot] += 1
        self.forward(self.head)
        self.head = []

    def on_body(self, body: bytes) -> None:
        if self.chunked:
            self.forward((b"%x\r\n" % len(body), body, b"\r\n"))
        else:
            self.forward((body,))

    def on_message_complete(self) -> None:
        if self.chunked:
            self.forward((b"0\r\n\r\n",))

    # --- the upstream ----------------------------------------------------------------

    def forward(self, parts: list[bytes] | tuple[bytes, ...]) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.writelines(parts)
            return
        if self.pending is None:
            self.pending = []
            self.transport.pause_reading()  # until the app's connection is up
            self.task = self.loop.create_task(self._connect())
        self.pending.extend(parts)

    async def _connect(self) -> None:
        config = self.proxy.config
        try:
            async with asyncio.timeout(config.connect_timeout):
                transport, upstream = await self.loop.create_connection(
                    lambda: Upstream(self), config.upstream_host, config.upstream_port)
        except (OSError, TimeoutError) as exc:
            self.proxy.upstream_failed(exc)
            self.pending = None
            self.refuse(502, "upstream_unavailable")
            return
        if self.state != OPEN:
            transport.close()
            return
        self.upstream = upstream
        pending, self.pending = self.pending or [], None
        transport.writelines(pending)
        self.transport.resume_reading()

    def upstream_closed(self) -> None:
        """The app closed its side: after its last response, the client's is closed too."""
        if self.error is not None:
            self._send_refusal()
        elif self.state == OPEN:
            self.close()

    # --- closing ---------------------------------------------------------------------

    def refuse(self, status: int, reason: str) -> None:
        """Answer `status` and close: at once if no request is with the app, else after
        the app has answered those (its responses come first, in order)."""
        if self.state != OPEN:
            return
        self.proxy.closed(reason)
        self.parser = None
        self.state = CLOSING
        self.error = error_response(status)
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None \
                and not upstream.transport.is_closing():
            upstream.transport.write_eof()  # the app finishes, then closes: upstream_closed
        else:
            if self.pending is not None:
                self.pending = None
            self._send_refusal()

    def _send_refusal(self) -> None:
        error, self.error = self.error, None
        if error is None or self.transport.is_closing():
            return
        self.transport.write(error)
        self.transport.resume_reading()
        self._rearm_linger()

    def _discard(self, size: int) -> None:
        self.discarded += size
        if self.discarded > DISCARD_LIMIT:
            self.transport.abort()
        elif self.linger is not None:
            self._rearm_linger()

    def _rearm_linger(self) -> None:
        if self.linger is not None:
            self.linger.cancel()
        self.linger = self.loop.call_later(LINGER, self.transport.close)

    def close(self) -> None:
        """Close after what is already written to the client has been sent."""
        self.state = CLOSING
        self.parser = None
        self.transport.close()

    def abort(self, reason: str) -> None:
        """Drop the connection now (a limit): counted under `reason`."""
        if self.state == CLOSING and (self.transport is None or self.transport.is_closing()):
            return
        self.proxy.closed(reason)
        handshaking = self.state == HANDSHAKING
        self.state = CLOSING
        self.parser = None
        if handshaking and self.sock is not None:
            # The loop owns the socket (or will): a shutdown ends its handshake at once
            # and leaves closing the descriptor to its owner.
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        elif self.transport is not None:
            self.transport.abort()
