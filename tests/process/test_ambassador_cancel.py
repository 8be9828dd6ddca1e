"""CancelRequests through db-ambassador, against a real PostgreSQL 15 server: a cancel goes
only to the upstream that issued the key it presents (the ambassador read that key from the
session it relayed), a key it never relayed reaches no server, every cancel is counted by
its outcome, and one session's cancels are rate-limited (AMBASSADOR_CANCEL_RATE)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import psycopg
import pytest

from patterns.ambassador.db_ambassador import pgwire
from tests.conftest import http_ok, wait_until
from tests.process.test_ambassador import (  # noqa: F401 (fixtures)
    TRUSTED,
    ambassador,
    cancel_running_sleep,
    messages,
    pki,
    primary,
    read_to_eof,
    workdir,
)

CANCEL = 'ambassador_cancel_requests_total{{result="{}"}}'
# What PostgreSQL 15 logs for a CancelRequest naming no backend of its own.
UNMATCHED = "in cancel request did not match any process"


def cancel_request(pid: int, secret: bytes) -> bytes:
    return struct.pack("!III", 12 + len(secret), pgwire.CANCEL_REQUEST_CODE, pid) + secret


def send_cancel(port: int, packet: bytes) -> None:
    """As libpq does: send the CancelRequest, wait until the other side closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(packet)
        assert read_to_eof(sock, within=5) == b""


class Decoy:
    """A second upstream that passes the ambassador's health check (it answers an SSLRequest
    with 'N', as a server without TLS does) and records every CancelRequest it is sent: no
    cancel meant for another server's session may reach it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.cancels: list[bytes] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                peer, _ = self.listener.accept()
            except OSError:
                continue
            with peer:
                peer.settimeout(2)
                try:
                    packet = peer.recv(4096)
                    if packet[4:8] == struct.pack("!I", pgwire.SSL_REQUEST_CODE):
                        peer.sendall(b"N")
                    elif packet[4:8] == struct.pack("!I", pgwire.CANCEL_REQUEST_CODE):
                        self.cancels.append(packet)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def decoy() -> Iterator[Decoy]:
    server = Decoy()
    yield server
    server.close()


def raw_session(port: int, name: str) -> tuple[socket.socket, int, bytes]:
    """A session through the ambassador spoken by hand (trust authentication), so the test
    knows its BackendKeyData: (socket, process id, secret key)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(pgwire.startup_message({"user": TRUSTED, "database": "postgres",
                                         "application_name": name}))  # fmt: skip
    data = b""
    while not data.endswith(pgwire.message(b"Z", b"I")):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    (key,) = [body for kind, body in messages(data) if kind == b"K"]
    (pid,) = struct.unpack_from("!I", key)
    return sock, pid, key[4:]


def test_random_cancel_requests_reach_no_server_and_a_real_cancel_only_its_own(
    ambassador, primary, decoy  # noqa: F811
):
    amb = ambassador([primary.port, decoy.port])
    wait_until(lambda: all(u["healthy"] for u in amb.json("/upstreams")["upstreams"]),
               what="both upstreams healthy")  # fmt: skip
    unmatched_before = primary.server_log().count(UNMATCHED)
    for pid in range(1000, 1050):  # keys the ambassador never relayed: guesses
        send_cancel(amb.port, cancel_request(pid, struct.pack("!I", pid * 7919)))
    assert decoy.cancels == []  # not fanned out: not passed on at all
    assert primary.server_log().count(UNMATCHED) == unmatched_before
    send_cancel(amb.port, cancel_request(4242, b"k" * 32))  # a protocol 3.2 sized key
    assert amb.metric(CANCEL.format("unknown_key")) == 51
    assert amb.metric(CANCEL.format("forwarded")) == 0

    # A real cancel of a running query still works, and goes to the session's server only.
    with psycopg.connect(amb.dsn()) as conn:
        cancel_running_sleep(conn, primary)
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session carries on
    assert amb.metric(CANCEL.format("forwarded")) == 1
    assert decoy.cancels == []
    assert primary.server_log().count(UNMATCHED) == unmatched_before
    assert "cancel request not delivered" not in amb.proc.output()


def test_one_sessions_cancels_are_rate_limited_and_others_still_get_through(
    ambassador, primary  # noqa: F811
):
    # One per 100 s: the bucket holds one cancel, so of a burst the first passes and the
    # others are refused (none refills during the test).
    amb = ambassador([primary.port], AMBASSADOR_CANCEL_RATE="0.01")
    wait_until(lambda: http_ok(amb.admin + "/readyz"), what="readiness")
    flooder, pid, secret = raw_session(amb.port, "flooder")
    unmatched_before = primary.server_log().count(UNMATCHED)
    try:
        burst = 20
        for _ in range(burst):
            send_cancel(amb.port, cancel_request(pid, secret))
        assert amb.metric(CANCEL.format("forwarded")) == 1
        assert amb.metric(CANCEL.format("rate_limited")) == burst - 1
        # The key is right: the server took every forwarded one (an idle backend ignores it).
        assert primary.server_log().count(UNMATCHED) == unmatched_before

        # Another session's cancel has a budget of its own.
        with psycopg.connect(amb.dsn()) as conn:
            cancel_running_sleep(conn, primary)
        assert amb.metric(CANCEL.format("forwarded")) == 2
    finally:
        flooder.close()


def test_a_cancel_for_a_closed_session_is_not_passed_on(ambassador, primary):  # noqa: F811
    amb = ambassador([primary.port])
    wait_until(lambda: http_ok(amb.admin + "/readyz"), what="readiness")
    sock, pid, secret = raw_session(amb.port, "gone")
    sock.sendall(pgwire.terminate_message())
    sock.close()
    wait_until(lambda: amb.json("/upstreams")["sessions_open"] == 0, what="session closed")
    send_cancel(amb.port, cancel_request(pid, secret))
    assert amb.metric(CANCEL.format("unknown_key")) == 1
    assert amb.metric(CANCEL.format("forwarded")) == 0
