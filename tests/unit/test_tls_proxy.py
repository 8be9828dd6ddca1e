"""The tls-proxy's relay, in-process in front of an echo upstream: identity headers the
client sends are removed and the proxy's own set on every request of a kept-alive
connection; bodies (Content-Length and chunked) and pipelined requests arrive intact;
what is not HTTP/1.1 is refused with its status and the connection closed."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tls_proxy_harness import Running, echo, echo_upstream, in_process_proxy

FORGED = [
    ("X-Forwarded-For", "6.6.6.6"),
    ("x-forwarded-for", "7.7.7.7"),
    ("X-CLIENT-SUBJECT", "CN=admin"),
    ("X-Client-Verify", "SUCCESS"),
    ("X_Client_Subject", "CN=underscore"),
    ("Forwarded", "for=6.6.6.6;proto=https"),
    ("X-Forwarded-Proto", "gopher"),
    ("X-Real-IP", "6.6.6.6"),
]
IDENTITY = {"x-forwarded-for", "x-forwarded-proto", "x-client-verify", "x-client-subject",
            "forwarded", "x-real-ip", "x-client_subject"}  # fmt: skip


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Running]:
    with echo_upstream() as upstream, in_process_proxy(tmp_path, upstream) as running:
        yield running


def identity_seen(headers: list[list[str]]) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in headers if k.lower().replace("_", "-") in IDENTITY
            or k.lower() in IDENTITY]  # fmt: skip


def send_forged(conn, path: str = "/") -> dict:  # type: ignore[no-untyped-def]
    conn.putrequest("GET", path, skip_accept_encoding=True)
    for name, value in FORGED:
        conn.putheader(name, value)
    conn.putheader("X-Kept", "yes")
    conn.endheaders()
    return echo(conn.getresponse())


def test_forged_identity_replaced_on_every_request_of_a_kept_alive_connection(
    proxy: Running,
) -> None:
    conn = proxy.https()
    for path in ("/first", "/second", "/third"):
        seen = send_forged(conn, path)
        assert seen["path"] == path
        assert identity_seen(seen["headers"]) == [
            ("x-forwarded-for", "127.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-client-verify", "NONE"),
        ]
        assert ["X-Kept", "yes"] in seen["headers"]
    conn.close()
    assert proxy.total("handshakes:ok") == 1  # one connection carried all three
    assert proxy.total("requests") == 3


def test_bodies_and_pipelined_requests(proxy: Running) -> None:
    with proxy.tls_socket() as sock:
        sock.sendall(
            b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world"
            b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"X-Forwarded-For: 1.1.1.1\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
            b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    bodies = [part for part in data.split(b"\r\n\r\n")[1::1] if part.startswith(b"{")]
    import json

    seen = [json.loads(b[: b.rindex(b"}") + 1]) for b in bodies]
    assert [(s["path"], s["body"]) for s in seen] == [
        ("/cl", "hello world"), ("/chunked", "hello world"), ("/last", "")]
    assert ("x-forwarded-for", "127.0.0.1") in identity_seen(seen[1]["headers"])
    assert ("x-forwarded-for", "1.1.1.1") not in identity_seen(seen[1]["headers"])


def read_all(sock: ssl.SSLSocket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    return data


def test_huge_head_is_431_and_closed(proxy: Running) -> None:
    with proxy.tls_socket() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        reply = read_all(sock)  # ends: the proxy closed the connection
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert proxy.total("closed:too_large") == 1
    assert proxy.total("requests") == 0


def test_too_many_headers_is_431(proxy: Running) -> None:
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
    with proxy.tls_socket() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 431 ")


@pytest.mark.parametrize(("request_bytes", "status", "reason"), [
    (b"\x00\x01garbage\r\n\r\n", 400, "bad_request"),
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
     "bad_request"),
    (b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 501,
     "not_implemented"),
])  # fmt: skip
def test_what_is_not_http_is_refused(
    proxy: Running, request_bytes: bytes, status: int, reason: str
) -> None:
    with proxy.tls_socket() as sock:
        sock.sendall(request_bytes)
        assert read_all(sock).startswith(b"HTTP/1.1 %d " % status)
    assert proxy.total(f"closed:{reason}") == 1
    assert proxy.total("requests") == 0


def test_upstream_down_is_502(tmp_path: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with in_process_proxy(tmp_path, port) as proxy, proxy.tls_socket() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 502 ")
        assert proxy.total("closed:upstream_unavailable") == 1


def test_tls_versions(proxy: Running) -> None:
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = proxy.client_context()
        context.minimum_version = context.maximum_version = version
        with proxy.tls_socket(context=context) as sock:
            assert sock.version() == version.name.replace("v1_", "v1.")


def test_large_bodies_stream_both_ways(proxy: Running) -> None:
    body = bytes(range(256)) * 12_000  # 3 MB, every byte value
    conn = proxy.https()
    conn.request("POST", "/upload", body=body)  # Content-Length
    assert echo(conn.getresponse())["body"].encode("latin-1") == body
    conn.request("POST", "/chunks", body=iter([body[:1_000_000], body[1_000_000:]]),
                 encode_chunked=True)  # fmt: skip
    assert echo(conn.getresponse())["body"].encode("latin-1") == body
    conn.close()


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[Running]:
    limits = {"PROXY_HANDSHAKE_TIMEOUT_SECONDS": "0.5", "PROXY_HEADER_TIMEOUT_SECONDS": "0.5",
              "PROXY_IDLE_TIMEOUT_SECONDS": "0.5"}  # fmt: skip
    with echo_upstream() as upstream, in_process_proxy(tmp_path, upstream, env=limits) as running:
        yield running


def closed_by_proxy(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


def test_a_stalled_handshake_is_closed(strict: Running) -> None:
    from tests.conftest import wait_until

    with socket.create_connection(("127.0.0.1", strict.port), timeout=30) as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then nothing
        assert closed_by_proxy(sock)
    wait_until(lambda: strict.total("handshakes:timeout") == 1, what="the timeout counted")


def test_a_head_trickled_past_its_deadline_is_closed(strict: Running) -> None:
    from tests.conftest import wait_until

    with strict.tls_socket() as sock:
        sock.settimeout(30)
        sock.sendall(b"GET / HTTP/1.1\r\n")

        def trickle() -> bool:  # a byte at a time: busy, but the head never completes
            with contextlib.suppress(OSError):
                sock.sendall(b"X")
            return strict.total("closed:request_timeout") == 1

        wait_until(trickle, timeout=30, interval=0.1, what="the head's deadline")
        assert closed_by_proxy(sock)
    assert strict.total("requests") == 0


def test_an_idle_keep_alive_connection_is_closed(strict: Running) -> None:
    conn = strict.https()
    conn.request("GET", "/")
    assert echo(conn.getresponse())["path"] == "/"
    assert closed_by_proxy(conn.sock)  # type: ignore[arg-type]
    assert strict.total("closed:idle_timeout") == 1
    conn.close()


def test_a_refused_pipelined_request_is_answered_after_the_ones_before(proxy: Running) -> None:
    with proxy.tls_socket() as sock:
        # One record: the second is refused while the app's connection is still opening.
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\n\x00\r\n\r\n")
        reply = read_all(sock)
    first, _, rest = reply.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.0 200 ") or first.startswith(b"HTTP/1.1 200 ")
    assert b'"path": "/first"' in rest
    assert rest.index(b"HTTP/1.1 400 ") > rest.index(b'"path": "/first"')
