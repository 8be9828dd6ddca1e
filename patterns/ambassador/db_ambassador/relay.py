"""The byte relay between a client and its upstream, once the startup packet is through.

Each side's transport gets a `_Pipe` protocol that writes whatever it receives straight
into the other transport: no per-message parsing, no coroutine per read, which is what
keeps the ambassador close to HAProxy. Back-pressure is the transports' own: when one
side's write buffer fills up, reading from the other side pauses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .pgwire import AuthFilter
from .upstream import Upstream


class Traffic:
    """Byte totals, plain ints on the hot path; the metrics collector reads them."""

    def __init__(self) -> None:
        self.client_to_upstream = 0
        self.upstream_to_client = 0


class _Pipe(asyncio.Protocol):
    def __init__(
        self,
        session: Session,
        peer: asyncio.Transport,
        upstream_bound: bool,
        auth_filter: AuthFilter | None = None,
    ) -> None:
        self.session = session
        self.peer = peer
        self.upstream_bound = upstream_bound
        self.auth_filter = auth_filter
        self.eof = False

    def data_received(self, data: bytes) -> None:
        if self.auth_filter is not None:
            out = self.auth_filter.feed(data)
            if self.auth_filter.done:
                self.auth_filter = None  # from here on: bytes, untouched
            if out:
                self.peer.write(out)
        else:
            self.peer.write(data)
        self.session.active = True
        if self.upstream_bound:
            self.session.traffic.client_to_upstream += len(data)
        else:
            self.session.traffic.upstream_to_client += len(data)

    def eof_received(self) -> bool:
        # A half-close is passed on; the other direction stays open for the reply.
        self.eof = True
        if self.peer.can_write_eof() and not self.peer.is_closing():
            self.peer.write_eof()
            if not self.session.both_eof():
                return True
        # TLS cannot carry a half-close, or both sides are done: close the session.
        self.session.close()
        return False

    # Our own transport's write buffer is full: stop reading from the peer feeding it.
    def pause_writing(self) -> None:
        self.peer.pause_reading()

    def resume_writing(self) -> None:
        self.peer.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.close()


class Session:
    """One client relayed to one upstream."""

    def __init__(
        self,
        client: asyncio.Transport,
        server: asyncio.Transport,
        upstream: Upstream,
        traffic: Traffic,
        on_closed: Callable[[Session], None],
        rewrite_auth: bool,
    ) -> None:
        self.client = client
        self.server = server
        self.upstream = upstream
        self.traffic = traffic
        self.on_closed = on_closed
        self.active = True
        self.idle_since = 0.0
        self.closed = asyncio.get_running_loop().create_future()
        self._to_server = _Pipe(self, server, upstream_bound=True)
        # Only a session over TLS can be offered channel binding the client cannot use.
        auth_filter = AuthFilter() if rewrite_auth else None
        self._to_client = _Pipe(self, client, upstream_bound=False, auth_filter=auth_filter)

    def start(self, first_bytes: bytes) -> None:
        """Take both transports over and send the client's first packet upstream."""
        self.client.set_protocol(self._to_server)
        self.server.set_protocol(self._to_client)
        self.server.write(first_bytes)
        self.client.resume_reading()
        self.server.resume_reading()

    def both_eof(self) -> bool:
        return self._to_server.eof and self._to_client.eof

    def close(self) -> None:
        """Close both sides, flushing what is already buffered (e.g. a server's last
        ErrorResponse still goes to the client)."""
        if self.closed.done():
            return
        self.client.close()
        self.server.close()
        self.closed.set_result(None)
        self.on_closed(self)

    def abort(self) -> None:
        """Drop both sides at once: the upstream is gone or the drain time is over."""
        self.client.abort()
        self.server.abort()
        self.close()
