"""The admin server every service runs, in-process with short limits: what a hostile peer
can hold of it (connections, time, bytes), what a broken metrics exposition does to
readiness, and the headers of every response."""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from patterns.common.admin import AdminLimits, AdminServer, json_response
from patterns.common.http_headers import STRICT_POLICY
from tests.conftest import ROOT, wait_until

FAST = AdminLimits(request_timeout=1.0, idle_timeout=0.5)


@pytest.fixture
def admin() -> Iterator[Callable[..., AdminServer]]:
    started: list[AdminServer] = []

    def start(limits: AdminLimits = FAST, registry: CollectorRegistry | None = None) -> AdminServer:
        server = AdminServer("127.0.0.1", 0, registry or CollectorRegistry(), limits)
        server.readiness.append(lambda: (True, ""))
        server.open_probes()
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def url(server: AdminServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def closed_count(server: AdminServer, reason: str) -> float:
    value = server.registry.get_sample_value(
        "admin_connections_closed_total", {"reason": reason}
    )
    return value or 0.0


def connect(server: AdminServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def read_response(sock: socket.socket) -> bytes:
    """One response (this server always sends Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def closed_by_server(sock: socket.socket, timeout: float = 10.0) -> bool:
    """True once the server has closed the connection (whatever it sent before)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        sock.setblocking(True)


# --- headers ------------------------------------------------------------------------------


def test_every_response_says_nosniff_no_store_and_allows_nothing_to_load(admin):
    server = admin()
    server.route("/api/thing", lambda _query: json_response({"ok": True}))
    for path, status in [("/healthz", 200), ("/readyz", 200), ("/metrics", 200),
                         ("/api/thing", 200), ("/nope", 404)]:
        response = requests.get(url(server, path), timeout=5)
        assert response.status_code == status, path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["Cache-Control"] == "no-store", path
        assert response.headers["Content-Security-Policy"] == STRICT_POLICY, path
        assert "frame-ancestors 'none'" in STRICT_POLICY and "default-src 'none'" in STRICT_POLICY


def sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_a_page_may_run_exactly_its_own_inline_script_and_style_and_fetch_its_server(admin):
    server = admin()
    script, style = "\nfetch('api/x').then(r => r.json());\n", "\nbody { color: red; }\n"
    html = (f"<!doctype html><html><head><!-- <style>not this</style> -->"
            f"<style>{style}</style></head><body><p>hi</p>"
            f"<script>{script}</script></body></html>").encode()
    server.page("/", html)
    response = requests.get(url(server, "/"), timeout=5)
    assert response.status_code == 200 and response.content == html
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    directives = dict(
        d.strip().split(" ", 1) for d in response.headers["Content-Security-Policy"].split(";")
    )
    assert directives == {
        "default-src": "'none'",
        "script-src": sha256_source(script),
        "style-src": sha256_source(style),
        "connect-src": "'self'",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    # Other paths of the same server keep the strict policy.
    other = requests.get(url(server, "/healthz"), timeout=5)
    assert other.headers["Content-Security-Policy"] == STRICT_POLICY


@pytest.mark.parametrize("html", [
    '<p style="color: red">styled</p>',
    '<script src="https://cdn.example/x.js"></script>',
])
def test_a_page_the_policy_would_break_is_refused_at_start_up(admin, html):
    with pytest.raises(ValueError, match="would block"):
        admin().page("/", html.encode())


def test_the_collector_live_page_fits_its_policy():
    """Everything the page needs is inline (hashed) or fetched from its own server:
    no style attribute, no external script, fetches to relative API paths only."""
    html = (ROOT / "patterns/sidecar/collector/live.html").read_text()
    server = AdminServer("127.0.0.1", 0, CollectorRegistry())
    try:
        server.page("/", html.encode())  # raises on what the policy would block
    finally:
        server.stop()
    fetched = re.findall(r"fetch\(\s*\"([^\"]+)\"", html)
    assert sorted(fetched) == ["api/counts", "api/records?"]
    assert not re.search(r"\b(src|href)\s*=", html), "the page loads nothing else"


# --- a broken exposition ------------------------------------------------------------------


class Breakable(Collector):
    def __init__(self) -> None:
        self.broken = False

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.broken:
            raise ValueError("int too large to convert to float")
        yield GaugeMetricFamily("breakable", "A collector a test can break.", value=1)


def test_a_failing_exposition_is_a_500_and_not_ready_until_it_works_again(admin):
    registry = CollectorRegistry()
    breakable = Breakable()
    registry.register(breakable)
    server = admin(registry=registry)
    assert requests.get(url(server, "/metrics"), timeout=5).status_code == 200

    breakable.broken = True
    metrics = requests.get(url(server, "/metrics"), timeout=5)
    assert metrics.status_code == 500
    assert "int too large to convert to float" in metrics.text
    ready = requests.get(url(server, "/readyz"), timeout=5)
    assert ready.status_code == 503
    assert ready.text.startswith("metrics exposition failed: ValueError(")
    assert "int too large to convert to float" in ready.text
    assert requests.get(url(server, "/healthz"), timeout=5).status_code == 200

    # Readiness retries the exposition itself: it recovers without a scrape.
    breakable.broken = False
    ready = requests.get(url(server, "/readyz"), timeout=5)
    assert ready.status_code == 200 and ready.text == "ok\n"
    metrics = requests.get(url(server, "/metrics"), timeout=5)
    assert metrics.status_code == 200 and "breakable 1.0" in metrics.text


# --- what a peer can hold -----------------------------------------------------------------


def test_a_trickled_request_is_closed_at_the_deadline_from_its_first_byte(admin):
    """One byte every 0.2 s never lets a per-read timeout expire; the deadline of the
    whole head (1 s here) closes the connection anyway."""
    server = admin()
    sock = connect(server)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    sock.settimeout(0.2)
    sent = 0
    closed = False
    for byte in request:
        try:
            sock.send(bytes([byte]))
            sent += 1
            closed = sock.recv(1) == b""
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        if closed:
            break
    assert closed, "the trickle outlived the request deadline"
    assert sent < len(request)
    assert closed_count(server, "request_timeout") == 1
    assert requests.get(url(server, "/healthz"), timeout=5).status_code == 200


def test_keep_alive_serves_several_requests_then_an_idle_connection_is_closed(admin):
    server = admin(AdminLimits(idle_timeout=2.0))
    sock = connect(server)
    for _ in range(3):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        response = read_response(sock)
        assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"\r\n\r\nok\n")
        assert b"Connection: close" not in response
    assert closed_by_server(sock)
    assert closed_count(server, "idle_timeout") == 1


def test_http_1_0_and_connection_close_end_the_connection_after_the_response(admin):
    server = admin()
    for request in (b"GET /healthz HTTP/1.0\r\n\r\n",
                    b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"):
        sock = connect(server)
        sock.sendall(request)
        response = read_response(sock)
        assert response.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in response
        assert closed_by_server(sock, timeout=2)


def test_an_oversized_request_head_is_refused_with_431(admin):
    server = admin(AdminLimits(max_head_bytes=2048))
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\n" + b"X-Big: " + b"a" * 1_000_000 + b"\r\n")
    sock.shutdown(socket.SHUT_WR)
    response = read_response(sock)
    assert response.startswith(b"HTTP/1.1 431 ")
    assert closed_by_server(sock)
    wait_until(lambda: closed_count(server, "too_large") == 1, what="the refusal counted")


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /healthz\r\n\r\n", 400),
    (b"GET /healthz HTTP/2.0\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 400),
    (b"GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
])
def test_malformed_requests_and_request_bodies_are_refused_and_closed(admin, request_bytes,
                                                                     status):
    server = admin()
    sock = connect(server)
    sock.sendall(request_bytes)
    response = read_response(sock)
    assert response.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"X-Content-Type-Options: nosniff" in response
    assert closed_by_server(sock)


def test_other_methods_get_405_and_head_gets_the_headers_only(admin):
    server = admin()
    assert requests.post(url(server, "/healthz"), timeout=5).status_code == 405
    head = requests.head(url(server, "/healthz"), timeout=5)
    assert head.status_code == 200 and head.headers["Content-Length"] == "3"
    assert head.content == b""


def test_when_the_table_is_full_the_connection_waiting_longest_gives_way(admin):
    server = admin(AdminLimits(max_connections=4, idle_timeout=60))
    held = []
    for _ in range(4):  # four kept-alive connections, admitted and idle, oldest first
        sock = connect(server)
        sock.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        held.append(sock)
    response = requests.get(url(server, "/healthz"), timeout=5)
    assert response.status_code == 200
    assert closed_by_server(held[0])
    assert all(still_open(sock) for sock in held[1:])
    assert closed_count(server, "evicted") == 1


def test_idle_and_trickling_connections_cannot_keep_a_probe_out(admin):
    """A table full of silent and half-sent connections: a probe still gets in."""
    server = admin(AdminLimits(max_connections=8, request_timeout=30, idle_timeout=30))
    hostile = [connect(server) for _ in range(20)]
    for sock in hostile[::2]:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
    for _ in range(5):
        assert requests.get(url(server, "/healthz"), timeout=5).status_code == 200
    wait_until(lambda: closed_count(server, "evicted") >= 12, what="the oldest evicted")


def test_a_stopped_server_frees_its_port(admin):
    server = admin()
    port = server.port
    server.stop()
    with socket.create_server(("127.0.0.1", port)):
        pass


def test_handler_threads_do_not_grow_with_connections(admin):
    server = admin(AdminLimits(max_connections=16, handler_threads=2))
    before = threading.active_count()
    socks = [connect(server) for _ in range(100)]
    for _ in range(5):
        assert requests.get(url(server, "/healthz"), timeout=5).status_code == 200
    assert threading.active_count() == before
    for sock in socks:
        sock.close()


def test_probes_are_handled_ahead_of_queued_slow_views(admin):
    """With every handler thread busy on a slow view and more queued, a probe is the next
    request handled: queued views cannot make a liveness or readiness probe time out."""
    server = admin(AdminLimits(handler_threads=1, request_timeout=30, idle_timeout=30))
    gate = threading.Semaphore(0)
    order: list[str] = []

    def slow(_query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        order.append("view")
        gate.acquire(timeout=30)
        return json_response({})

    server.route("/slow", slow)
    server.readiness.append(lambda: (order.append("probe") is None, ""))
    views = [connect(server) for _ in range(4)]
    for sock in views:
        sock.sendall(b"GET /slow HTTP/1.1\r\n\r\n")
    wait_until(lambda: server._handlers._jobs.qsize() == 3, what="one view running, 3 queued")
    probe = connect(server)
    probe.sendall(b"GET /readyz HTTP/1.1\r\n\r\n")
    wait_until(lambda: server._handlers._jobs.qsize() == 4, what="the probe queued")
    for _ in views:
        gate.release()
    assert read_response(probe).startswith(b"HTTP/1.1 200 ")
    for sock in views:
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
    assert order == ["view", "probe", "view", "view", "view"]


def test_a_large_response_is_sent_whole_before_a_requested_close(admin):
    server = admin(AdminLimits(request_timeout=30))
    body = b"x" * (16 * 1024 * 1024)  # more than the kernel takes at once
    server.route("/big", lambda _query: (200, "application/octet-stream", body))
    sock = connect(server)
    sock.sendall(b"GET /big HTTP/1.1\r\nConnection: close\r\n\r\n")
    received = bytearray()
    while chunk := sock.recv(1024 * 1024):
        received += chunk
    assert received.endswith(b"\r\n\r\n" + body)


def test_stopping_with_connections_open_logs_no_traceback(admin, caplog):
    """A service's shutdown with a scraper kept alive and a half-sent request open must
    not print an asyncio traceback per connection (Python 3.11 logs one for every
    cancelled connection task)."""
    server = admin()
    kept_alive, half_sent = connect(server), connect(server)
    kept_alive.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    read_response(kept_alive)
    half_sent.sendall(b"GET /met")
    wait_until(lambda: len(server._connections) == 2, what="both connections admitted")
    with caplog.at_level("DEBUG", logger="asyncio"):
        server.stop()
    assert closed_by_server(kept_alive) and closed_by_server(half_sent)
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert errors == [], [r.getMessage() for r in errors]
