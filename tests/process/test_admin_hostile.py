"""The admin server as every service runs it (a real process on the shared runtime,
default limits), against a peer that floods it: silent sockets, a request trickled a byte
at a time, endless headers. Probes keep being answered, the flood adds no thread, and
what a connection may send costs at most the cap."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any

import requests

from patterns.common.admin import AdminLimits
from tests.conftest import free_port, http_ok, wait_until

MODULE = "tests.process.runtime_sample"
LIMITS = AdminLimits()


def status_field(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def closed_total(base: str, reason: str) -> float:
    text = requests.get(base + "/metrics", timeout=5).text
    match = re.search(rf'^admin_connections_closed_total\{{reason="{reason}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def start_sample(service: Any) -> tuple[Any, str]:
    port = free_port()
    proc = service(MODULE, {"SAMPLE_HTTP_PORT": str(port)})
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(base + "/healthz"), what="liveness")
    return proc, base


def test_idle_sockets_and_a_trickled_request_neither_block_probes_nor_add_threads(service):
    proc, base = start_sample(service)
    port = int(base.rsplit(":", 1)[1])
    threads_before = status_field(proc.pid, "Threads")

    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
    trickle = socket.create_connection(("127.0.0.1", port))
    trickle.settimeout(1.0)
    request = b"GET /healthz HTTP/1.1\r\nHost: sample\r\nX-Slow: " + b"a" * 1000

    sent = 0

    def trickle_closed() -> bool:
        """Send the next byte, wait a second for the server to close; meanwhile a probe
        must be answered, and the flood must not have added a thread."""
        nonlocal sent
        try:
            trickle.send(request[sent:sent + 1])
            sent += 1
            if trickle.recv(1) == b"":
                return True
        except TimeoutError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            return True
        probe = requests.get(base + "/healthz", timeout=5)
        assert probe.status_code == 200 and probe.text == "ok\n"
        assert status_field(proc.pid, "Threads") == threads_before
        return False

    wait_until(trickle_closed, timeout=LIMITS.request_timeout + 15, interval=0,
               what="the trickled request to be closed at its deadline")
    assert 1 < sent < len(request)
    assert closed_total(base, "request_timeout") == 1
    # The oldest silent sockets gave way to newer connections; the table stays bounded.
    assert closed_total(base, "evicted") >= 300 - LIMITS.max_connections
    assert status_field(proc.pid, "Threads") == threads_before
    for sock in [*idle, trickle]:
        sock.close()
    assert proc.stop() == 0


def test_endless_request_headers_cost_at_most_the_head_cap(service):
    """Before: each connection could buffer 100 header lines of 64 KiB (6 MiB) in a
    thread of its own. Now a head is refused past `max_head_bytes`."""
    proc, base = start_sample(service)
    port = int(base.rsplit(":", 1)[1])
    peak_before = status_field(proc.pid, "VmHWM")
    line = b"X-Big: " + b"a" * 65000 + b"\r\n"
    held = []
    for _ in range(40):  # all at once: each one's head is in the server at the same time
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        for _ in range(99):
            sock.sendall(line)
        held.append(sock)
    grown_kib = status_field(proc.pid, "VmHWM") - peak_before
    assert grown_kib < 16 * 1024, f"peak RSS grew {grown_kib} KiB under 40 x 6 MiB heads"
    for sock in held:
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(65536).startswith(b"HTTP/1.1 431 ")
        sock.close()
    wait_until(lambda: closed_total(base, "too_large") == 40, what="every head counted")
    assert requests.get(base + "/healthz", timeout=5).status_code == 200
    assert proc.stop() == 0


def test_a_response_the_peer_never_reads_does_not_hold_the_server(service):
    """A peer that pipelines requests and reads nothing: the server gives up sending
    within the request deadline and others are served meanwhile."""
    proc, base = start_sample(service)
    port = int(base.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    pipelined = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
    sent = 0
    started = time.monotonic()
    while sent < len(pipelined) and time.monotonic() - started < 30:
        try:
            sent += sock.send(pipelined[sent:])
        except BlockingIOError:
            assert requests.get(base + "/healthz", timeout=5).status_code == 200
            if closed_total(base, "request_timeout") >= 1:
                break
            time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            break
    wait_until(lambda: closed_total(base, "request_timeout") >= 1, timeout=30,
               what="the unread responses to be given up")
    sock.close()
    assert proc.stop() == 0
