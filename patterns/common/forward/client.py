"""A blocking Forward protocol client that waits for acks.

fluent-logger's Python sender only speaks Message mode and never asks for acks, so a
shipper that must not lose lines needs this: one PackedForward (optionally gzip
compressed) request per call, a fresh `chunk` id each time, and the call returns only
when the server has answered `{"ack": chunk}`, i.e. has stored the events. Any failure
closes the connection and raises a `ForwardError`; the next call reconnects (and redoes
the shared-key handshake), so the caller's retry is simply "call again".
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any

import msgpack

from patterns.common.forward import protocol

# Acks and handshake messages are tiny; a server sending more is not one to trust with
# memory (a partial msgpack object is built as it arrives).
_RESPONSE_BUFFER = 64 * 1024


class ForwardError(Exception):
    """Sending failed; the events may not have been stored and should be sent again."""


class ConnectError(ForwardError):
    """The server could not be reached."""


class HandshakeError(ForwardError):
    """The shared-key handshake failed (wrong key, wrong user/password, bad messages)."""


class AckTimeout(ForwardError):
    """No ack arrived within ack_timeout."""


class AckMismatch(ForwardError):
    """The server acknowledged a different chunk, or answered with something else."""


class ConnectionClosed(ForwardError):
    """The server closed the connection before acknowledging."""


class ForwardClient:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        shared_key: str | None = None,
        self_hostname: str | None = None,
        username: str = "",
        password: str = "",
        connect_timeout: float = 5.0,
        ack_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.shared_key = shared_key
        self.self_hostname = self_hostname or socket.gethostname()
        self.username = username
        self.password = password
        self.connect_timeout = connect_timeout
        self.ack_timeout = ack_timeout
        self._sock: socket.socket | None = None
        self._unpacker = protocol.new_unpacker(_RESPONSE_BUFFER)

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def send_packed(self, tag: str, entries: bytes, count: int, compressed: bool = False) -> None:
        """Send `entries` (concatenated msgpack [time, record] arrays, `count` of them) as
        one PackedForward request (gzipped when `compressed`) and wait for its ack."""
        chunk = protocol.new_chunk_id()
        frame = protocol.encode_packed_forward(tag, entries, count, chunk, compressed=compressed)
        self.send_frame(frame, chunk)

    def send_frame(self, frame: bytes, chunk: str) -> None:
        """Send an already encoded request carrying option `chunk` and wait for its ack."""
        sock = self._connect()
        try:
            sock.settimeout(self.ack_timeout)
            try:
                sock.sendall(frame)
            except TimeoutError:
                raise AckTimeout(
                    f"sending to {self._peer()} did not finish within {self.ack_timeout}s"
                ) from None
            response = self._read(time.monotonic() + self.ack_timeout, "ack")
            if isinstance(response, list | tuple) and response and response[0] == "HELO":
                raise HandshakeError(
                    f"{self._peer()} requires the shared-key handshake (HELO received): "
                    "configure the shared key"
                )
            try:
                acked = protocol.decode_ack(response)
            except protocol.ProtocolError as exc:
                raise AckMismatch(f"{self._peer()}: {exc}") from None
            if acked != chunk:
                raise AckMismatch(f"{self._peer()} acked chunk {acked!r}, expected {chunk!r}")
        except ForwardError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise ConnectionClosed(f"connection to {self._peer()} failed: {exc}") from None

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._unpacker = protocol.new_unpacker(_RESPONSE_BUFFER)

    def __enter__(self) -> ForwardClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- internals ------------------------------------------------------------------------

    def _peer(self) -> str:
        return f"{self.host}:{self.port}"

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            if not self._closed_by_peer(self._sock):
                return self._sock
            # The server closed an idle connection: reconnect now rather than fail the send.
            self.close()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as exc:
            raise ConnectError(f"cannot connect to {self._peer()}: {exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        if self.shared_key is not None:
            try:
                self._handshake(sock, self.shared_key)
            except ForwardError:
                self.close()
                raise
            except OSError as exc:
                self.close()
                raise HandshakeError(f"handshake with {self._peer()} failed: {exc}") from None
        return sock

    @staticmethod
    def _closed_by_peer(sock: socket.socket) -> bool:
        """Between requests the server sends nothing, so a readable socket means EOF
        (or an error), i.e. the server has closed the connection."""
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _handshake(self, sock: socket.socket, shared_key: str) -> None:
        deadline = time.monotonic() + self.connect_timeout
        try:
            helo = protocol.decode_helo(self._read(deadline, "HELO"))
        except AckTimeout:
            raise HandshakeError(
                f"{self._peer()} did not send HELO within {self.connect_timeout}s: "
                "the server has no shared key configured, or is not a Forward server"
            ) from None
        except protocol.ProtocolError as exc:
            raise HandshakeError(
                f"{self._peer()} did not start the shared-key handshake: {exc.detail}"
            ) from None
        if helo.auth and not self.username:
            raise HandshakeError(f"{self._peer()} requires a username and password")
        ping, salt = protocol.encode_ping(
            helo, self.self_hostname, shared_key, self.username, self.password
        )
        sock.sendall(ping)
        try:
            pong = protocol.decode_pong(self._read(deadline, "PONG"))
        except protocol.ProtocolError as exc:
            raise HandshakeError(f"bad PONG from {self._peer()}: {exc.detail}") from None
        if not pong.auth_result:
            raise HandshakeError(f"{self._peer()} refused the handshake: {pong.reason}")
        expected = protocol.shared_key_digest(salt, pong.server_hostname, helo.nonce, shared_key)
        if not protocol.hmac_equal(expected, pong.shared_key_hexdigest):
            raise HandshakeError(
                f"shared key mismatch: {self._peer()} answered with a digest of another key"
            )

    def _read(self, deadline: float, what: str) -> Any:
        """Next msgpack object from the server, or a ForwardError."""
        assert self._sock is not None
        while True:
            try:
                return next(self._unpacker)
            except StopIteration:
                pass
            except (ValueError, protocol.ProtocolError) as exc:
                raise AckMismatch(f"garbage from {self._peer()} instead of {what}: {exc}") from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AckTimeout(f"no {what} from {self._peer()} within the timeout")
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                raise AckTimeout(f"no {what} from {self._peer()} within the timeout") from None
            if not data:
                raise ConnectionClosed(f"{self._peer()} closed the connection before {what}")
            try:
                self._unpacker.feed(data)
            except msgpack.BufferFull:
                raise AckMismatch(f"oversized response from {self._peer()}") from None
