"""One client connection: its TLS, its request heads rewritten, its bytes relayed.

TLS runs here, on the accepted TCP transport, through an `ssl.SSLObject` over two memory
BIOs (what asyncio's and uvloop's TLS layers do inside): each connection gets the context
of the moment it was accepted, so a certificate switch never touches it; the proxy sees
and bounds handshakes in progress like any other connection; and a refused handshake's
alert (certificate required, unknown CA) is sent to the client before the close.

Requests go through httptools (llhttp) as they are decrypted: every head is rebuilt
without the headers a client may not set (identity.py) and with the proxy's own, then
bodies follow as the parser delivers them (Content-Length bodies as they are, chunked
ones re-framed chunk by chunk, trailers dropped). Nothing is parsed in Python byte by
byte; the app's responses are encrypted and passed back as they come. One upstream
connection per client connection, opened at its first request: the app sees one client's
requests on one connection, in order, and its responses need no parsing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from http import HTTPStatus
from typing import TYPE_CHECKING

import httptools

from .identity import STRIPPED, stripped

if TYPE_CHECKING:
    from .server import Proxy

HANDSHAKING, OPEN, CLOSING = 0, 1, 2
# After a refusal (431, 400...), what the client still sends is read and dropped, up to
# this much, until it has been quiet LINGER seconds: closing with its bytes unread would
# reset the connection and could lose the answer before the client reads it.
DISCARD_LIMIT = 1024 * 1024
LINGER = 1.0
# Decrypted bytes taken per read call (a TLS record holds at most 16 KiB).
READ_SIZE = 16 * 1024
# One worker's read buffer: a connection's plaintext is parsed before the next is read.
_BUFFER = bytearray(READ_SIZE)
_VIEW = memoryview(_BUFFER)
# The end of a request line, by the HTTP version httptools reports.
LINE_ENDS = {"1.1": b" HTTP/1.1\r\n", "1.0": b" HTTP/1.0\r\n"}


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


class Upstream(asyncio.Protocol):
    """The app's side of one client connection: whatever it sends goes to the client."""

    __slots__ = ("client", "transport")

    def __init__(self, client: ClientConnection) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        client = self.client
        client.last_activity = client.loop.time()
        tls = client.tls
        if client.state != OPEN or tls is None:
            client.send(data)  # the refusal path: send() decides
            return
        try:
            tls.write(data)
        except (ssl.SSLError, OSError):
            client.transport.abort()
            return
        client.transport.write(client.outgoing.read())

    def eof_received(self) -> bool:
        self.client.upstream_closed()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream_closed()

    # The app reads the request slower than the client sends it: stop reading the client
    # until the app has taken what is buffered for it.
    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client.transport.resume_reading()


class ClientConnection(asyncio.Protocol):
    """A client connection, from accept to close. Also httptools' callback object.

    Every connection ends with no reference cycle left (connection_lost drops the parser
    and the upstream, which point back at it): its TLS state, buffers and transports are
    freed by reference counting at once, not by a later garbage collection."""

    __slots__ = ("accepted", "chunk_data", "chunked", "discarded", "error", "head",
                 "head_fed", "head_fields", "head_size", "head_started", "identity",
                 "incoming", "last_activity", "linger", "loop", "max_header_bytes",
                 "max_headers", "outgoing", "parser", "pending", "proxy", "state", "task",
                 "tls", "transport", "upstream", "url")  # fmt: skip

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.loop = proxy.loop
        config = proxy.config
        self.max_header_bytes = config.max_header_bytes
        self.max_headers = config.max_headers
        self.state = HANDSHAKING
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.accepted = self.last_activity = self.loop.time()
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls: ssl.SSLObject | None = None
        self.identity = b""  # the identity headers and the blank line that ends a head
        self.parser: httptools.HttpRequestParser | None = None
        self.upstream: Upstream | None = None
        self.pending: list[bytes] | None = None  # request bytes while the upstream connects
        # The head being read: since when (None between requests), its size and fields.
        self.head_started: float | None = None
        self.head_size = 0  # request line and fields, as the parser passed them on
        self.head_fed = 0  # bytes fed while the head was incomplete
        self.head_fields = 0
        self.head: list[bytes] = [b""]  # [request line, kept fields...]
        self.url = b""
        self.chunked = False
        self.chunk_data = False  # the current chunk carried data (the last one carries none)
        self.discarded = 0
        self.error: bytes | None = None  # a refusal to send once the app is done
        self.linger: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None  # the app's connect

    # --- TLS -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        context = self.proxy.accept(self)
        if context is not None:
            self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)

    def _flush(self) -> None:
        """Send what TLS has written (records, alerts, tickets)."""
        outgoing = self.outgoing
        if outgoing.pending:
            self.transport.write(outgoing.read())

    def _handshake(self) -> bool:
        """Advance the handshake; True once it is done."""
        tls = self.tls
        assert tls is not None
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except (ssl.SSLError, OSError) as exc:
            self._flush()  # the alert that says why, before the close
            self.state = CLOSING
            self.proxy.handshake_failed(exc)
            self.transport.close()
            return False
        if tls.version() != "TLSv1.3":
            self._flush()  # TLS 1.2: the server's Finished, which the client waits for
        # else what is left are the session tickets, which no client waits for: they go
        # out with the first response (or the close), one write and segment fewer.
        self.state = OPEN
        self.identity = self.proxy.identity(self.transport, tls.getpeercert() or None)
        self.parser = httptools.HttpRequestParser(self)
        self.proxy.handshake_done(self)
        return True

    def send(self, data: bytes) -> None:
        """Encrypt `data` to the client."""
        tls = self.tls
        if tls is None or self.state == HANDSHAKING or self.transport.is_closing():
            return
        try:
            tls.write(data)
        except (ssl.SSLError, OSError):
            self.transport.abort()
            return
        self.transport.write(self.outgoing.read())

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        self.incoming.write(data)
        if self.state != OPEN:
            if self.state == HANDSHAKING and self.tls is not None:
                if not self._handshake():
                    return
            else:
                self._discard(len(data))
                return
        tls = self.tls
        incoming = self.incoming
        outgoing = self.outgoing
        assert tls is not None
        unsent = outgoing.pending  # TLS 1.3 session tickets, until the first response
        while True:
            try:
                # A record holds at most READ_SIZE bytes: one read takes a whole record,
                # into the worker's one buffer (the parser copies what it keeps).
                # (typeshed types read() as bytes; with a buffer it returns a count)
                size: int = tls.read(READ_SIZE, _BUFFER)  # type: ignore[assignment]
            except ssl.SSLWantReadError:  # the rest of a record is still on its way
                break
            except ssl.SSLZeroReturnError:  # close_notify: the client is done
                self.close()
                return
            except (ssl.SSLError, OSError):
                self.transport.abort()
                return
            if not size:
                break
            self._plain_received(_VIEW[:size])
            if self.parser is None:  # refused: what follows is discarded
                self._discard(incoming.pending)
                return
            if not incoming.pending:
                break
        if outgoing.pending > unsent:  # written while reading: e.g. an alert, a key update
            self._flush()

    def eof_received(self) -> bool:
        # TLS has no half-close: the client is done, so is the connection.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSING
        self.parser = None  # it holds this connection's callbacks: a cycle
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        upstream, self.upstream = self.upstream, None  # it points back here: a cycle
        if upstream is not None and upstream.transport is not None:
            upstream.transport.close()
        self.proxy.forget(self)

    # The app's writes back up behind a slow client: stop reading the app.
    def pause_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.resume_reading()

    # --- requests ----------------------------------------------------------------------

    def _plain_received(self, data: bytes | memoryview) -> None:
        parser = self.parser
        assert parser is not None
        try:
            parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            context = exc.__context__
            if not isinstance(context, Refusal):
                raise
            self.refuse(context.status, context.reason)
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
            self.head_fed += len(data)
            if self.head_fed > 2 * self.max_header_bytes:
                self.refuse(431, "too_large")

    # httptools calls only the callbacks an object has: a request without a chunked body
    # costs on_url, on_header per field and on_headers_complete, nothing per body byte.
    def on_url(self, url: bytes) -> None:
        if self.head_started is None:  # a new request (its URL may come in pieces)
            self.head_started = self.last_activity
        self.url += url
        self.head_size += len(url)
        if self.head_size > self.max_header_bytes:
            raise Refusal(431, "too_large")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_started is None:
            return  # a trailer after a chunked body: dropped
        self.head_fields += 1
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.max_header_bytes or self.head_fields > self.max_headers:
            raise Refusal(431, "too_large")
        lowered = name.lower()
        if lowered in STRIPPED or (b"_" in lowered and stripped(lowered)):
            return
        if lowered == b"transfer-encoding":
            self.chunked = True
        self.head.append(name + b": " + value + b"\r\n")

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        if parser.should_upgrade():  # Upgrade or CONNECT: this proxy relays HTTP/1.1 only
            raise Refusal(501, "not_implemented")
        version = parser.get_http_version()
        head = self.head
        head[0] = parser.get_method() + b" " + self.url + (
            LINE_ENDS.get(version) or b" HTTP/%s\r\n" % version.encode())
        head.append(self.identity)
        # Ready for the next request's head.
        self.head_started = None
        self.head_size = self.head_fed = self.head_fields = 0
        self.head = [b""]
        self.url = b""
        proxy = self.proxy
        proxy.slots[proxy.requests_slot] += 1
        self.forward(head)

    def on_body(self, body: bytes) -> None:
        if self.chunked:
            self.chunk_data = True
            self.forward((b"%x\r\n" % len(body), body, b"\r\n"))
        else:
            self.forward((body,))

    # Chunked bodies only: a chunk that ends without data was the last one.
    def on_chunk_header(self) -> None:
        self.chunk_data = False

    def on_chunk_complete(self) -> None:
        if not self.chunk_data:
            self.chunked = False
            self.forward((b"0\r\n\r\n",))

    # --- the upstream ----------------------------------------------------------------

    def forward(self, parts: list[bytes] | tuple[bytes, ...]) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            # One buffer: uvloop's single-write fast path (a request head is a few parts).
            upstream.transport.write(b"".join(parts))
            return
        if self.pending is None:
            self.connect()
        assert self.pending is not None
        self.pending.extend(parts)
        self.transport.pause_reading()  # until the app's connection is up

    def connect(self) -> None:
        """Open the app's connection at the first complete request head, never earlier:
        a peer that stalls a handshake or says nothing then costs the app nothing (an
        app like gunicorn's gthread gives each new connection a thread until its first
        request arrives, so idle connections from the proxy would lock it up)."""
        self.pending = []
        # Held here: the loop keeps only a weak reference to a task.
        self.task = self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        config = self.proxy.config
        try:
            async with asyncio.timeout(config.connect_timeout):
                transport, upstream = await self.loop.create_connection(
                    lambda: Upstream(self), config.upstream_host, config.upstream_port)
        except (OSError, TimeoutError) as exc:
            self.proxy.upstream_failed(exc)
            self.pending = None
            if self.error is not None:  # a later request was refused meanwhile: the first
                self.error = error_response(502)  # answer the client reads is this one
                self._send_refusal()
            else:
                self.refuse(502, "upstream_unavailable")
            return
        if self.transport.is_closing() or (self.state == CLOSING and self.error is None):
            transport.close()
            return
        self.upstream = upstream
        pending, self.pending = self.pending or [], None
        transport.write(b"".join(pending))
        if self.error is not None:  # refused meanwhile: the app answers what came before
            transport.write_eof()  # then closes, and the refusal follows (upstream_closed)
        else:
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
        elif not self.pending:
            self._send_refusal()
        # else: requests wait for the app's connection; _connect sends them, then this.

    def _send_refusal(self) -> None:
        error, self.error = self.error, None
        if error is None or self.transport.is_closing():
            return
        self.state = OPEN  # send() encrypts only on an open connection
        self.send(error)
        self.state = CLOSING
        self.transport.resume_reading()
        self._rearm_linger()

    def _discard(self, size: int) -> None:
        self.incoming = ssl.MemoryBIO()  # what is discarded is not even decrypted
        self.discarded += size
        if self.discarded > DISCARD_LIMIT:
            self.transport.abort()
        elif self.linger is not None:
            self._rearm_linger()

    def _rearm_linger(self) -> None:
        if self.linger is not None:
            self.linger.cancel()
        self.linger = self.loop.call_later(LINGER, self.close)

    def close(self) -> None:
        """Close after what is already written has been sent, with a close_notify."""
        tls = self.tls
        self.state = CLOSING
        self.parser = None
        if tls is not None and not self.transport.is_closing():
            with contextlib.suppress(ssl.SSLError, OSError):
                tls.unwrap()  # writes our close_notify; the client's is not awaited
            self._flush()
        self.transport.close()

    def abort(self, reason: str) -> None:
        """Drop the connection now (a limit): counted under `reason`."""
        if self.transport.is_closing():
            return
        if self.state == HANDSHAKING and reason == "timeout":
            self.proxy.row.add("handshakes:timeout")
        else:
            self.proxy.closed(reason)
        self.state = CLOSING
        self.parser = None
        self.transport.abort()
