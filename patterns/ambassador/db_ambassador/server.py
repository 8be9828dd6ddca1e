"""The ambassador's server: accept local clients, answer their SSLRequest, take a
connection from the upstream pool, relay; close idle sessions; drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import time

from patterns.common.admin import json_response
from patterns.common.service import Runtime

from . import pgwire
from .config import Config
from .metrics import SessionMetrics
from .pool import NoUpstream, UpstreamPool
from .sessions import Sessions
from .upstream import Upstream

log = logging.getLogger(__name__)

# SSLRequest and GSSENCRequest may each come once before the startup packet.
_MAX_NEGOTIATIONS = 2
ADMIN_SHUTDOWN = "57P01"


def _raise_fd_limit() -> None:
    # Every session holds two sockets; the default soft limit (often 1024) would cap
    # the ambassador long before AMBASSADOR_MAX_CONNECTIONS.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def read_startup(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """The client's startup packet or CancelRequest, after answering "N" to its SSLRequest
    or GSSENCRequest: plaintext on the pod's loopback, the ambassador encrypts upstream."""
    for _ in range(_MAX_NEGOTIATIONS + 1):
        header = await reader.readexactly(4)
        length = pgwire.startup_length(header)
        packet = header + await reader.readexactly(length - 4)
        code = pgwire.startup_code(packet)
        if code in (pgwire.SSL_REQUEST_CODE, pgwire.GSSENC_REQUEST_CODE) and length == 8:
            writer.write(b"N")
            continue
        if pgwire.is_cancel_request(packet):
            return packet
        if code >> 16 == 3:
            return packet
        raise pgwire.ProtocolError(f"unsupported protocol {code >> 16}.{code & 0xFFFF}")
    raise pgwire.ProtocolError("too many encryption negotiation requests")


class Ambassador:
    """The server side: the client protocol, refusals, the connection limit and draining.
    Where a session goes is the pool's business (`pool.py`), the sessions once started
    `sessions.py`'s."""

    def __init__(self, config: Config, runtime: Runtime) -> None:
        self.config = config
        self.runtime = runtime
        # /healthz must not say "ok" before the app's database address accepts
        # connections (the native sidecar's startupProbe holds the app back on it).
        self.listening = False
        runtime.admin.liveness.append(self._alive)
        self.sessions = Sessions(config.cancel_rate)
        # Slots taken by clients between their startup packet and a relayed session.
        self.connecting = 0
        self.metrics = SessionMetrics(runtime.registry, self.sessions.traffic, self.sessions.count)
        self.pool = UpstreamPool(config, runtime.registry, on_failed=self._kill_sessions)
        self.draining = False
        runtime.admin.readiness.append(self._ready)
        runtime.admin.route("/upstreams", lambda _query: json_response(self.view()))
        runtime.admin.open_probes()

    # --- state shown to operators ---------------------------------------------------

    def _alive(self) -> tuple[bool, str]:
        # Kubernetes' startupProbe holds the app back until this passes; after that it stays
        # true (also while draining: a liveness failure then would only restart us).
        if not self.listening:
            return False, (
                f"not listening yet on {self.config.listen_host}:{self.config.listen_port}"
                " (first health-check round)"
            )
        return True, "ok"

    def _ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining: shutting down"
        return self.pool.ready()

    def view(self) -> dict[str, object]:
        pool = self.pool.view()
        return {
            "listen": f"{self.config.listen_host}:{self.config.listen_port}",
            "tls_mode": pool["tls_mode"],
            "role_checks": pool["role_checks"],
            "active_upstream": pool["active_upstream"],
            "sessions_open": len(self.sessions),
            "max_connections": self.config.max_connections,
            "draining": self.draining,
            "upstreams": [u.view() for u in list(self.pool.upstreams)],
        }

    # --- sessions ----------------------------------------------------------------------

    def _kill_sessions(self, upstream: Upstream) -> None:
        # Clients of a dead server must see an error and reconnect, not hang on a socket
        # whose peer vanished without a FIN.
        doomed = self.sessions.on(upstream)
        if doomed:  # counted first: a client that sees its session end may look at once
            self.metrics.sessions_killed.labels(upstream=upstream.name).inc(len(doomed))
        for session in doomed:
            session.abort()
        if doomed:
            log.warning(
                "closed sessions of a failed upstream",
                extra={"upstream": upstream.name, "sessions": len(doomed)},
            )

    # --- clients -----------------------------------------------------------------------

    def _refuse(self, writer: asyncio.StreamWriter, reason: str, sqlstate: str, text: str) -> None:
        self.metrics.refusals.labels(reason=reason).inc()
        log.warning("client refused", extra={"reason": reason, "detail": text})
        # libpq keeps no SQLSTATE for errors during connection start-up (psycopg's
        # e.sqlstate is None there), so the code is in the text too, for people and logs.
        writer.write(pgwire.error_response(sqlstate, f"{text} (SQLSTATE {sqlstate})"))
        writer.close()

    async def handle_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        timeout = self.config.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                packet = await read_startup(reader, writer)
        except TimeoutError:
            # A peer that connects and says nothing must not hold a socket forever.
            self.metrics.refusals.labels(reason="startup_timeout").inc()
            writer.transport.abort()
            return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.transport.abort()
            return
        except pgwire.ProtocolError as exc:
            self._refuse(writer, "bad_startup", pgwire.PROTOCOL_VIOLATION, f"db-ambassador: {exc}")
            return
        if self.draining:
            self._refuse(writer, "shutting_down", ADMIN_SHUTDOWN, "db-ambassador is shutting down")
            return
        # Cancel requests bypass the limit: they are how a client frees a busy session.
        if pgwire.is_cancel_request(packet):
            await self._cancel(packet, writer)
            return
        if len(self.sessions) + self.connecting >= self.config.max_connections:
            self._refuse(
                writer,
                "too_many_connections",
                pgwire.TOO_MANY_CONNECTIONS,
                "db-ambassador: too many connections "
                f"(AMBASSADOR_MAX_CONNECTIONS={self.config.max_connections})",
            )
            return
        self.connecting += 1
        try:
            # The rule (AMBASSADOR_ROUTE) sees the startup packet; within connect_timeout.
            upstream, up_reader, up_writer = await self.pool.connect(packet)
        except NoUpstream as exc:
            self._refuse(writer, "no_healthy_upstream", pgwire.CONNECTION_FAILURE, str(exc))
            return
        finally:
            self.connecting -= 1
        if writer.transport.is_closing():  # the client gave up while we were connecting
            up_writer.transport.abort()
            return
        session = self.sessions.start(
            packet, reader, writer, upstream, up_writer, withdraw_plus=self.pool.tls is not None
        )
        self.metrics.sessions.labels(upstream=upstream.name).inc()
        if log.isEnabledFor(logging.DEBUG):
            params = pgwire.startup_params(packet)
            log.debug(
                "session started",
                extra={"upstream": upstream.name, "user": params.get("user"),
                       "database": params.get("database")},
            )  # fmt: skip
        # Waiting here keeps this frame's stream objects alive: a garbage-collected
        # StreamWriter closes its transport.
        await session.closed
        del up_reader

    async def _cancel(self, packet: bytes, writer: asyncio.StreamWriter) -> None:
        """Pass a CancelRequest on to the upstream of the session whose key it presents,
        within that session's rate; refuse it otherwise. Either way the client's connection
        is closed without a word, as a server does (libpq waits for that close)."""
        session, refusal = self.sessions.cancel_keys.admit(
            pgwire.cancel_key(packet), asyncio.get_running_loop().time()
        )
        if session is None:
            # Debug only: a flood of these must not become a flood of logs (the metric counts).
            self.metrics.cancels.labels(result=refusal).inc()
            log.debug("cancel request refused", extra={"reason": refusal})
        else:
            delivered = await self.pool.send_cancel(session.upstream, packet)
            self.metrics.cancels.labels(result="forwarded" if delivered else "undelivered").inc()
        writer.close()

    # --- lifecycle ---------------------------------------------------------------------

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def wake() -> None:  # runs in the signal handler: hand over to the loop
            loop.call_soon_threadsafe(stop.set)

        self.runtime.on_stop.append(wake)
        if self.runtime.stopping.is_set():
            stop.set()
        _raise_fd_limit()
        # One round before listening, so the first client is routed on facts.
        await self.pool.check_all()
        server = await asyncio.start_server(
            self.handle_client,
            self.config.listen_host,
            self.config.listen_port,
            backlog=1024,
            reuse_address=True,
        )
        self.listening = True
        background = [asyncio.create_task(self.pool.check_forever())]
        if self.config.idle_timeout > 0:
            idle = self.sessions.close_idle_forever(self.config.idle_timeout)
            background.append(asyncio.create_task(idle))
        preferred = self.pool.preferred
        log.info(
            "listening",
            extra={
                "listen": f"{self.config.listen_host}:{self.config.listen_port}",
                "upstreams": [u.name for u in self.pool.upstreams],
                "tls_mode": self.config.tls_mode,
                "active_upstream": preferred.name if preferred else None,
            },
        )
        await stop.wait()
        await self._drain(server)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)

    async def _drain(self, server: asyncio.base_events.Server) -> None:
        server.close()  # stop accepting; open sessions carry on
        self.draining = True
        self.metrics.draining.set(1)
        started = time.monotonic()
        log.info(
            "draining",
            extra={"sessions": len(self.sessions), "drain_timeout": self.config.drain_timeout},
        )
        aborted = await self.sessions.drain(self.config.drain_timeout)
        log.info(
            "drained",
            extra={"aborted_sessions": aborted, "seconds": round(time.monotonic() - started, 3)},
        )

