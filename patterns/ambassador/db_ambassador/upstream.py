"""Upstream servers: opening a connection (with TLS originated by the ambassador) and the
health check that speaks the PostgreSQL protocol to each of them."""

from __future__ import annotations

import asyncio
import ssl
import struct
import time
from dataclasses import dataclass

from . import pgwire
from .config import Config

# Errors on the health login that prove the server is up: invalid authorization (28),
# invalid catalog name (3D), insufficient resources (53, e.g. too many connections).
_SERVER_UP_SQLSTATE_CLASSES = ("28", "3D", "53")
# Bigger than any health-check reply; a larger length means we are not talking to PostgreSQL.
_MAX_MESSAGE = 1 << 20


class UpstreamError(Exception):
    """An upstream could not be reached or refused us; the text says why, for the client."""

    def __init__(self, text: str, sqlstate: str | None = None) -> None:
        super().__init__(text)
        self.sqlstate = sqlstate


def server_error(body: bytes) -> UpstreamError:
    return UpstreamError(pgwire.describe_error(body), pgwire.parse_error_fields(body).get("C"))


@dataclass
class Upstream:
    host: str
    port: int
    healthy: bool = False
    # True on a standby, False on a writable primary, None when unknown (no credentials).
    in_recovery: bool | None = None
    last_error: str = "not checked yet"
    last_check: float | None = None
    consecutive_failures: int = 0
    sessions: int = 0

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def role(self) -> str:
        if self.in_recovery is None:
            return "unknown"
        return "standby" if self.in_recovery else "primary"

    def view(self) -> dict[str, object]:
        return {
            "upstream": self.name,
            "healthy": self.healthy,
            "role": self.role,
            "sessions": self.sessions,
            "last_error": self.last_error or None,
            "last_check": self.last_check,
            "consecutive_failures": self.consecutive_failures,
        }


def tls_context(config: Config) -> ssl.SSLContext | None:
    if config.tls_mode == "disable":
        return None
    if config.tls_mode == "require":
        # Encrypted but unauthenticated, as libpq's sslmode=require without a root cert.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=config.tls_ca_file)  # verify-full


def describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed by the server"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


async def open_upstream(
    upstream: Upstream, tls: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection ready for the startup packet: TCP, then SSLRequest and TLS if asked."""
    reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
    try:
        if tls is not None:
            writer.write(pgwire.ssl_request())
            answer = await reader.readexactly(1)
            if answer != b"S":
                raise UpstreamError(f"server refused TLS (answered {answer!r} to SSLRequest)")
            await writer.start_tls(tls, server_hostname=upstream.host)
    except BaseException:
        writer.transport.abort()
        raise
    return reader, writer


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    header = await reader.readexactly(5)
    (length,) = struct.unpack("!I", header[1:])
    if not 4 <= length <= _MAX_MESSAGE:
        raise pgwire.ProtocolError(f"message length {length} out of range")
    return header[:1], await reader.readexactly(length - 4)


async def _authenticate(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, user: str, password: str
) -> None:
    scram: pgwire.ScramSha256 | None = None
    while True:
        kind, body = await read_message(reader)
        if kind == b"E":
            raise server_error(body)
        if kind != b"R":
            raise pgwire.ProtocolError(f"unexpected message {kind!r} during authentication")
        (code,) = struct.unpack_from("!I", body)
        if code == pgwire.AUTH_OK:
            return
        if code == pgwire.AUTH_CLEARTEXT:
            writer.write(pgwire.password_message(password))
        elif code == pgwire.AUTH_MD5:
            writer.write(pgwire.password_message(pgwire.md5_password(user, password, body[4:8])))
        elif code == pgwire.AUTH_SASL:
            if "SCRAM-SHA-256" not in pgwire.sasl_mechanisms(body):
                raise UpstreamError(
                    f"no supported SASL mechanism in {pgwire.sasl_mechanisms(body)}"
                )
            scram = pgwire.ScramSha256(password)
            writer.write(pgwire.sasl_initial_response("SCRAM-SHA-256", scram.client_first()))
        elif code == pgwire.AUTH_SASL_CONTINUE and scram is not None:
            writer.write(pgwire.sasl_response(scram.client_final(body[4:])))
        elif code == pgwire.AUTH_SASL_FINAL and scram is not None:
            scram.verify_server_final(body[4:])
        else:
            raise UpstreamError(f"unsupported authentication request {code}")
        await writer.drain()


async def _query_in_recovery(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    # Skip ParameterStatus, BackendKeyData and notices up to the first ReadyForQuery.
    while True:
        kind, body = await read_message(reader)
        if kind == b"E":
            raise server_error(body)
        if kind == b"Z":
            break
    writer.write(pgwire.query_message("SELECT pg_is_in_recovery()"))
    value: str | None = None
    while True:
        kind, body = await read_message(reader)
        if kind == b"D":
            value = pgwire.first_column(body)
        elif kind == b"E":
            raise server_error(body)
        elif kind == b"Z":
            break
    writer.write(pgwire.terminate_message())
    if value not in ("t", "f"):
        raise pgwire.ProtocolError(f"pg_is_in_recovery() returned {value!r}")
    return value == "t"


async def probe(upstream: Upstream, config: Config, tls: ssl.SSLContext | None) -> bool | None:
    """One health check. Without credentials: the server must answer an SSLRequest (and
    complete the TLS handshake when TLS is on). With credentials: log in and return
    pg_is_in_recovery(). Raises with a readable reason when the upstream is not usable."""
    reader, writer = await open_upstream(upstream, tls)
    try:
        if config.health_user is None:
            if tls is None:
                writer.write(pgwire.ssl_request())
                answer = await reader.readexactly(1)
                if answer not in (b"S", b"N"):
                    raise pgwire.ProtocolError(f"answered {answer!r} to SSLRequest: not PostgreSQL")
            return None
        writer.write(
            pgwire.startup_message(
                {
                    "user": config.health_user,
                    "database": config.health_database,
                    "application_name": "db-ambassador-health",
                }
            )
        )
        await writer.drain()
        await _authenticate(reader, writer, config.health_user, config.health_password())
        return await _query_in_recovery(reader, writer)
    finally:
        writer.transport.abort()


async def check(upstream: Upstream, config: Config, tls: ssl.SSLContext | None) -> None:
    """Run one probe and record its outcome on `upstream`."""
    try:
        in_recovery = await asyncio.wait_for(probe(upstream, config, tls), config.health_timeout)
    except TimeoutError as exc:
        # A slow answer is not a dead server (a busy host, a checkpoint): only several in a
        # row make it unhealthy. A refusal, a reset or a wrong answer counts at once.
        upstream.consecutive_failures += 1
        upstream.last_error = describe(exc)
        if upstream.consecutive_failures >= config.health_timeouts_allowed:
            upstream.healthy = False
    except UpstreamError as exc:
        upstream.last_error = describe(exc)
        upstream.consecutive_failures += 1
        # The server answered in PostgreSQL and refused the health login for a reason that
        # says nothing about its own health (wrong password, role or pg_hba rule; no such
        # database; all connection slots taken): it is up, only its role is unknown.
        # Failing it would cut every session over a credentials mistake or a busy server.
        auth_rejected = (exc.sqlstate or "").startswith(_SERVER_UP_SQLSTATE_CLASSES)
        upstream.healthy = auth_rejected
        if auth_rejected:
            upstream.in_recovery = None
    except (OSError, EOFError, pgwire.ProtocolError, ValueError) as exc:
        upstream.healthy = False
        upstream.last_error = describe(exc)
        upstream.consecutive_failures += 1
    else:
        upstream.healthy = True
        upstream.in_recovery = in_recovery
        upstream.last_error = ""
        upstream.consecutive_failures = 0
    upstream.last_check = time.time()
