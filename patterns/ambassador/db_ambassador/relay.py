"""The byte relay between a client and its upstream, once the startup packet is through.

Each side's transport gets a `_Pipe` protocol that writes whatever it receives straight
into the other transport: no per-message parsing, no coroutine per read, which is what
keeps the ambassador close to HAProxy. Back-pressure is the transports' own: when one
side's write buffer fills up, reading from the other side pauses. The one exception is the
server's side up to its first ReadyForQuery, read through a `StartupFilter` (a handful of
small messages per session) for the session's cancel key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .pgwire import StartupFilter
from .upstream import Upstream


class Traffic:
    """Byte totals: those of closed sessions, plus the live counters of open ones (read
    at scrape time, so the hot path only adds to an int on its own pipe)."""

    def __init__(self, sessions: set[Session]) -> None:
        self.sessions = sessions
        self.closed_to_upstream = 0
        self.closed_to_client = 0

    def add_closed(self, session: Session) -> None:
        self.closed_to_upstream += session.to_upstream.bytes
        self.closed_to_client += session.to_client.bytes

    def totals(self) -> tuple[int, int]:
        """(client to upstream, upstream to client)."""
        live = list(self.sessions)  # one atomic copy: the loop thread may change the set
        return (
            self.closed_to_upstream + sum(s.to_upstream.bytes for s in live),
            self.closed_to_client + sum(s.to_client.bytes for s in live),
        )


class _Pipe(asyncio.Protocol):
    def __init__(
        self,
        session: Session,
        peer: asyncio.Transport,
        startup: StartupFilter | None = None,
    ) -> None:
        self.session = session
        self.peer = peer
        self.startup = startup
        self.eof = False
        self.bytes = 0

    def data_received(self, data: bytes) -> None:
        startup = self.startup
        if startup is not None:
            out = startup.feed(data)
            if startup.backend_key is not None and self.session.backend_key is None:
                # Before the client has the key: a cancel it sends then finds its session.
                self.session.backend_key = startup.backend_key
                self.session.on_key(self.session)
            if startup.done:
                self.startup = None  # from here on: bytes, untouched
            if out:
                self.peer.write(out)
        else:
            self.peer.write(data)
        self.bytes += len(data)

    def eof_received(self) -> bool:
        if self.eof:  # already passed on (uvloop reports it again after resume_reading)
            return True
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
        on_key: Callable[[Session], None],
        withdraw_plus: bool,
    ) -> None:
        self.client = client
        self.server = server
        self.upstream = upstream
        self.traffic = traffic
        self.on_closed = on_closed
        self.on_key = on_key
        # The server's BackendKeyData body (process id, secret): what a cancel must present.
        self.backend_key: bytes | None = None
        # For the idle sweeper: bytes seen at its last pass, and since when unchanged.
        self.seen_bytes = -1
        self.idle_since = 0.0
        self.closed = asyncio.get_running_loop().create_future()
        self.to_upstream = _Pipe(self, server)
        # Only a session over TLS can be offered channel binding the client cannot use.
        self.to_client = _Pipe(self, client, startup=StartupFilter(withdraw_plus))

    def start(self, first_bytes: bytes, client_eof: bool) -> None:
        """Take both transports over and send the client's first bytes upstream;
        `client_eof`: the client half-closed before the session started."""
        self.client.set_protocol(self.to_upstream)
        self.server.set_protocol(self.to_client)
        self.server.write(first_bytes)
        if client_eof:
            # The stream reader took that EOF and the transport reports it only once.
            self.to_upstream.eof_received()
            if self.closed.done():
                return
        self.client.resume_reading()
        self.server.resume_reading()

    def both_eof(self) -> bool:
        return self.to_upstream.eof and self.to_client.eof

    def bytes_relayed(self) -> int:
        return self.to_upstream.bytes + self.to_client.bytes

    def close(self) -> None:
        """Close both sides, flushing what is already buffered (e.g. a server's last
        ErrorResponse still goes to the client)."""
        if self.closed.done():
            return
        self.client.close()
        self.server.close()
        self.closed.set_result(None)
        self.traffic.add_closed(self)
        self.on_closed(self)

    def abort(self) -> None:
        """Drop both sides at once: the upstream is gone or the drain time is over."""
        self.client.abort()
        self.server.abort()
        self.close()
