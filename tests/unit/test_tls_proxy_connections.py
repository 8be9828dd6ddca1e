"""What a connection costs the tls-proxy once it is over, and what a client keeps from it:
a closed connection leaves no reference cycle behind (its TLS state and buffers are freed
at once, not at some later garbage collection: the proxy's memory stays flat under a
stream of new connections); a TLS 1.3 client gets its session tickets (they leave with
the first response) and resumes its session on the next connection; the identity headers
made once per address stay a bounded cache."""

from __future__ import annotations

import gc
import http.client
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from patterns.security.tls_proxy.certs import CertStore
from patterns.security.tls_proxy.config import load_config
from patterns.security.tls_proxy.counters import SharedCounters
from patterns.security.tls_proxy.identity import identity_headers
from patterns.security.tls_proxy.relay import ClientConnection, Upstream
from patterns.security.tls_proxy.server import IDENTITY_CACHE, Proxy
from tests.conftest import wait_until
from tests.tls_proxy_harness import Running, echo, echo_upstream, in_process_proxy


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Running]:
    with echo_upstream() as upstream, in_process_proxy(tmp_path, upstream) as running:
        yield running


def left_behind(port: int) -> list[object]:
    """This proxy's connection objects the garbage collector still tracks."""
    return [o for o in gc.get_objects()
            if (isinstance(o, ClientConnection) and o.proxy.config.listen_port == port)
            or (isinstance(o, Upstream) and o.client.proxy.config.listen_port == port)]


def test_a_closed_connection_leaves_nothing_for_the_garbage_collector(proxy: Running) -> None:
    gc.collect()
    gc.disable()  # what is freed now was freed by reference counting alone
    try:
        for close in (True, False):  # the app closes, or the client does
            for _ in range(3):
                conn = proxy.https()
                conn.request("GET", "/", headers={"Connection": "close"} if close else {})
                assert echo(conn.getresponse())["path"] == "/"
                conn.close()
        wait_until(lambda: proxy.total("connections_open") == 0, what="the connections closed")
        wait_until(lambda: left_behind(proxy.port) == [], timeout=10,
                   what="the connections' objects freed")  # fmt: skip
    finally:
        gc.enable()


def test_a_tls13_session_resumes_on_the_next_connection(proxy: Running) -> None:
    context = proxy.client_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    session = None
    for resumed in (False, True, True):
        raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        with context.wrap_socket(raw, server_hostname="localhost", session=session) as sock:
            assert sock.version() == "TLSv1.3"
            assert sock.session_reused is resumed
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            response = http.client.HTTPResponse(sock)  # type: ignore[arg-type]
            response.begin()
            assert echo(response)["path"] == "/"
            # The tickets came with the response: the next connection offers one.
            session = sock.session
            assert session is not None and session.has_ticket


class Peer:
    def __init__(self, ip: str) -> None:
        self.ip = ip

    def get_extra_info(self, name: str) -> tuple[str, int] | None:
        return (self.ip, 40000) if name == "peername" else None


def test_identity_headers_are_made_once_per_address_in_a_bounded_cache(
    tmp_path: Path,
) -> None:
    config = load_config({"PROXY_CERT_DIR": str(tmp_path)})
    proxy = Proxy(config, SharedCounters(1).row(0), CertStore(tmp_path, None), first=True)
    expected = identity_headers("10.0.0.1", None) + b"\r\n"
    assert proxy.identity(Peer("10.0.0.1"), None) == expected  # type: ignore[arg-type]
    assert proxy.identity(Peer("10.0.0.1"), None) is proxy.identities["10.0.0.1"]  # type: ignore[arg-type]
    for i in range(IDENTITY_CACHE * 2):  # a flood of addresses
        proxy.identity(Peer(f"10.1.{i // 256}.{i % 256}"), None)  # type: ignore[arg-type]
        assert len(proxy.identities) <= IDENTITY_CACHE
    # With a client certificate they depend on it too: made for each connection.
    peer = {"subject": ((("commonName", "alice"),),)}
    assert proxy.identity(Peer("10.0.0.2"), peer) == (  # type: ignore[arg-type]
        identity_headers("10.0.0.2", peer) + b"\r\n")
    assert "10.0.0.2" not in proxy.identities
