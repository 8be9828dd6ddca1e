"""tls-proxy as its image runs it (`python -m patterns.security.tls_proxy`, two workers)
in front of whoami-app: forged identity headers never reach the app; a renewed
certificate reaches new handshakes while a kept-alive connection carries on; a bad
generation is refused and counted; an expired certificate is never served; mutual TLS
refuses clients without a good certificate; hostile peers do not lock a good one out."""

from __future__ import annotations

import datetime
import http.client
import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.conftest import ServiceProcess, free_port, http_ok, wait_until
from tests.tls_certs import CA, Issued

PROXY = "patterns.security.tls_proxy"
APP = "patterns.security.whoami_app"


@dataclass
class Pod:
    proxy: ServiceProcess
    port: int
    admin: int
    ca: CA
    ca_file: Path
    cert_dir: Path
    tmp: Path

    def context(self, cert: Issued | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if cert is not None:
            context.load_cert_chain(*cert.write(self.tmp, f"client-{cert.serial}"))
        return context

    def connect(self, context: ssl.SSLContext | None = None) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection("localhost", self.port, timeout=10,
                                           context=context or self.context())  # fmt: skip
        conn.connect()
        return conn

    def whoami(self, conn: http.client.HTTPSConnection,
               headers: list[tuple[str, str]] = ()) -> dict:  # type: ignore[assignment]
        conn.putrequest("GET", "/")
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body
        return json.loads(body)

    def served_serial(self, context: ssl.SSLContext | None = None) -> str:
        conn = self.connect(context)
        try:
            return serial_of(conn)
        finally:
            conn.close()

    def metric(self, name: str) -> float:
        text = requests.get(f"http://127.0.0.1:{self.admin}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not in /metrics")

    def ready(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.admin}/readyz")


def serial_of(conn: http.client.HTTPSConnection) -> str:
    der = conn.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


@pytest.fixture
def pod(tmp_path: Path, service: Callable[..., ServiceProcess]) -> Iterator[Callable[..., Pod]]:
    app_port = free_port()
    app = service(APP, {"WHOAMI_APP_PORT": str(app_port)})
    wait_until(lambda: http_ok(f"http://127.0.0.1:{app_port}/healthz"), timeout=20,
               what="whoami-app")  # fmt: skip

    def start(client_ca: CA | None = None, **env: str) -> Pod:
        ca = CA()
        cert_dir = tmp_path / "tls"
        ca.install(cert_dir, ca.issue(("localhost",)))
        port, admin = free_port(), free_port()
        settings = {
            "PROXY_LISTEN": f"127.0.0.1:{port}", "PROXY_HTTP_PORT": str(admin),
            "PROXY_UPSTREAM": f"127.0.0.1:{app_port}", "PROXY_CERT_DIR": str(cert_dir),
            "PROXY_WORKERS": "2", "PROXY_RELOAD_SECONDS": "0.1", **env,
        }  # fmt: skip
        if client_ca is not None:
            settings["PROXY_CLIENT_CA_FILE"] = str(client_ca.write(tmp_path / "client-ca.crt"))
        proxy = service(PROXY, settings)
        result = Pod(proxy, port, admin, ca, ca.write(tmp_path / "ca.crt"), cert_dir, tmp_path)
        wait_until(result.ready, timeout=20, what="tls-proxy ready")
        return result

    yield start
    assert app.alive()


def test_forged_identity_never_reaches_the_app(pod: Callable[..., Pod]) -> None:
    proxy = pod()
    conn = proxy.connect()
    forged = [("X-Forwarded-For", "6.6.6.6"), ("x-client-subject", "CN=root"),
              ("X-CLIENT-VERIFY", "SUCCESS"), ("X_Client_Subject", "CN=root"),
              ("Forwarded", "for=6.6.6.6"), ("X-Forwarded-Proto", "http"),
              ("X-Forwarded-For", "7.7.7.7")]  # fmt: skip
    expected = {"client_address": "127.0.0.1", "client_verify": "NONE",
                "client_subject": None, "proto": "https"}  # fmt: skip
    for _ in range(3):  # every request of the kept-alive connection
        assert proxy.whoami(conn, forged) == expected
    conn.close()
    assert proxy.metric("proxy_handshakes_total{result=\"ok\"}") >= 1
    proxy.proxy.stop()
    assert proxy.proxy.wait() == 0


def all_new_handshakes_serve(proxy: Pod, serial: str) -> bool:
    # Two workers reload on their own: every one of several new connections must agree.
    return all(proxy.served_serial() == serial for _ in range(6))


def test_renewal_reaches_new_handshakes_and_open_connections_carry_on(
    pod: Callable[..., Pod],
) -> None:
    proxy = pod()
    kept = proxy.connect()
    first = serial_of(kept)
    assert proxy.whoami(kept)["proto"] == "https"
    for _ in range(3):
        renewed = proxy.ca.issue(("localhost",))
        proxy.ca.install(proxy.cert_dir, renewed)
        wait_until(lambda serial=renewed.serial: all_new_handshakes_serve(proxy, serial),
                   timeout=20, what="the renewed certificate on new handshakes")  # fmt: skip
        assert proxy.whoami(kept)["client_address"] == "127.0.0.1"  # still the same connection
        assert serial_of(kept) == first
    view = requests.get(f"http://127.0.0.1:{proxy.admin}/api/certificate", timeout=5).json()
    assert view["serial"] == renewed.serial and view["dns_names"] == ["localhost"]
    assert proxy.metric(f'proxy_certificate_serial_info{{serial="{renewed.serial}"}}') == 1
    assert proxy.metric('proxy_certificate_reloads_total{result="ok"}') == 4

    # A generation whose key is not its certificate's: refused, counted, the old one stays.
    proxy.ca.install(proxy.cert_dir, proxy.ca.issue(("localhost",)), key_of=proxy.ca.issue())
    wait_until(lambda: proxy.metric('proxy_certificate_reloads_total{result="bad"}') == 1,
               timeout=20, what="the bad generation counted")  # fmt: skip
    assert all_new_handshakes_serve(proxy, renewed.serial)
    assert proxy.whoami(kept)["proto"] == "https"
    assert proxy.ready()
    kept.close()


def test_expired_certificate_is_never_served(pod: Callable[..., Pod]) -> None:
    proxy = pod()
    now = datetime.datetime.now(datetime.UTC)
    short = proxy.ca.issue(("localhost",), not_before=now - datetime.timedelta(seconds=60),
                           lifetime=datetime.timedelta(seconds=64))  # fmt: skip
    not_after = short.cert.not_valid_after_utc.timestamp()
    proxy.ca.install(proxy.cert_dir, short)
    wait_until(lambda: all_new_handshakes_serve(proxy, short.serial), timeout=20,
               what="the short-lived certificate")  # fmt: skip
    kept = proxy.connect()
    # No CA check of the time here: the client takes whatever is served, and the test
    # checks each certificate served against the clock itself.
    lax = proxy.context()
    lax.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    lax.check_hostname = False
    lax.verify_mode = ssl.CERT_NONE

    def refused() -> bool:
        try:
            conn = proxy.connect(lax)
        except (ssl.SSLError, ConnectionError, OSError):
            return True
        served_at = time.time()
        assert serial_of(conn) == short.serial
        assert served_at < not_after, "a certificate was served after its notAfter"
        conn.close()
        return False

    wait_until(refused, timeout=30, interval=0.02, what="new handshakes refused at expiry")
    wait_until(lambda: not proxy.ready(), timeout=10, what="/readyz 503")
    assert proxy.metric('proxy_handshakes_total{result="no_certificate"}') >= 1
    # A connection made before keeps its session (the app still answers on it).
    assert proxy.whoami(kept)["proto"] == "https"
    kept.close()
    renewed = proxy.ca.issue(("localhost",))
    proxy.ca.install(proxy.cert_dir, renewed)
    wait_until(proxy.ready, timeout=20, what="ready again after a renewal")
    assert all_new_handshakes_serve(proxy, renewed.serial)


def client_subject_name() -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example, Inc."),
        x509.NameAttribute(NameOID.COMMON_NAME, "alice"),
    ])  # fmt: skip


def test_mutual_tls(pod: Callable[..., Pod]) -> None:
    clients = CA("client CA")
    proxy = pod(client_ca=clients)

    # No certificate: the handshake ends with the certificate_required alert.
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
        proxy.whoami(proxy.connect())
    wait_until(lambda: proxy.metric('proxy_handshakes_total{result="no_client_certificate"}')
               == 1, what="the refusal counted")  # fmt: skip

    # A certificate from another CA: refused (unknown CA).
    stranger = CA("another CA").issue(client=True, subject=client_subject_name())
    with pytest.raises(ssl.SSLError, match="UNKNOWN_CA"):
        proxy.whoami(proxy.connect(proxy.context(stranger)))
    wait_until(lambda: proxy.metric('proxy_handshakes_total{result="bad_client_certificate"}')
               == 1, what="the refusal counted")  # fmt: skip

    # A good one: the app gets its subject as an RFC 4514 string, and cannot be fooled.
    alice = clients.issue(client=True, subject=client_subject_name())
    conn = proxy.connect(proxy.context(alice))
    seen = proxy.whoami(conn, [("X-Client-Subject", "CN=mallory")])
    assert seen == {"client_address": "127.0.0.1", "client_verify": "SUCCESS",
                    "client_subject": "CN=alice,O=Example\\, Inc.,C=DE", "proto": "https"}
    assert seen["client_subject"] == alice.cert.subject.rfc4514_string()
    conn.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_hostile_peers_do_not_lock_a_good_client_out(pod: Callable[..., Pod]) -> None:
    proxy = pod(PROXY_WORKERS="1", PROXY_MAX_CONNECTIONS="32",
                PROXY_HANDSHAKE_TIMEOUT_SECONDS="60", PROXY_IDLE_TIMEOUT_SECONDS="60")
    address = ("127.0.0.1", proxy.port)
    hostile: list[socket.socket] = []
    try:
        for i in range(100):
            sock = socket.create_connection(address, timeout=5)
            if i % 3 == 0:  # a handshake started and stalled: half a ClientHello
                sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 20)
            elif i % 3 == 1:  # garbage
                sock.sendall(b"GET / HTTP/1.1\r\n\r\n" * 4)
            hostile.append(sock)  # and the rest say nothing at all
        conn = proxy.connect()
        assert proxy.whoami(conn)["proto"] == "https"
        conn.close()
        assert proxy.metric('proxy_connections_closed_total{reason="evicted"}') > 0
        assert proxy.metric('proxy_handshakes_total{result="failed"}') > 0
        assert proxy.metric("proxy_connections_open") <= 32
    finally:
        for sock in hostile:
            sock.close()


def test_memory_stays_bounded_under_a_connection_flood(pod: Callable[..., Pod]) -> None:
    proxy = pod(PROXY_WORKERS="1", PROXY_MAX_CONNECTIONS="256")
    address = ("127.0.0.1", proxy.port)
    # Heads near the proxy's default limit, in fields the app accepts (8 KiB each).
    big = [(f"X-Pad-{i}", "x" * 7000) for i in range(4)]

    def served() -> None:  # a good client, after the flood: it evicts a silent peer
        conn = proxy.connect()
        assert proxy.whoami(conn, big)["proto"] == "https"
        conn.close()

    def flood_round() -> None:  # past the table's size: silent peers and stalled handshakes
        flood = [socket.create_connection(address, timeout=5) for _ in range(400)]
        for sock in flood[::2]:
            sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100)
        served()
        for sock in flood:
            sock.close()

    for _round in range(3):  # the allocator's steady state with a full table
        flood_round()
    before = rss_kib(proxy.proxy.pid)
    for _round in range(5):
        flood_round()
    after = rss_kib(proxy.proxy.pid)
    assert after < 64 * 1024, f"RSS {after} KiB"
    assert after - before < 4 * 1024, f"RSS grew from {before} to {after} KiB"


def worker_pids(master: int) -> list[int]:
    kids = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in kids]


def test_a_dead_worker_is_started_again(pod: Callable[..., Pod]) -> None:
    import os
    import signal

    proxy = pod()  # two workers: the first process and one more
    assert proxy.metric("proxy_workers_alive") == 2
    (worker,) = worker_pids(proxy.proxy.pid)
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: worker_pids(proxy.proxy.pid) not in ([], [worker]), timeout=20,
               what="the worker started again")  # fmt: skip
    wait_until(lambda: proxy.metric("proxy_workers_alive") == 2 and proxy.ready(), timeout=20,
               what="both workers serving")  # fmt: skip
    assert all(proxy.whoami(proxy.connect())["proto"] == "https" for _ in range(6))
    (replacement,) = worker_pids(proxy.proxy.pid)
    proxy.proxy.stop()  # SIGTERM: the first process stops the others, then exits 0
    assert proxy.proxy.wait() == 0
    assert not Path(f"/proc/{replacement}").exists() or \
        "zombie" in Path(f"/proc/{replacement}/status").read_text()


def test_not_ready_and_refusing_until_a_certificate_arrives(
    tmp_path: Path, service: Callable[..., ServiceProcess]
) -> None:
    port, admin = free_port(), free_port()
    cert_dir = tmp_path / "empty"
    proc = service(PROXY, {"PROXY_LISTEN": f"127.0.0.1:{port}", "PROXY_HTTP_PORT": str(admin),
                           "PROXY_CERT_DIR": str(cert_dir), "PROXY_WORKERS": "1",
                           "PROXY_RELOAD_SECONDS": "0.1"})  # fmt: skip

    def readyz() -> tuple[int, str] | None:  # None until the admin port answers
        try:
            response = requests.get(f"http://127.0.0.1:{admin}/readyz", timeout=2)
        except requests.RequestException:
            return None
        return response.status_code, response.text

    # Past "starting" (the checks not registered yet): the proxy's own verdict.
    status, text = wait_until(
        lambda: (answer := readyz()) is not None and "starting" not in answer[1] and answer,
        timeout=20, what="/readyz answering")  # fmt: skip
    assert status == 503 and "no certificate loaded yet" in text
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        socket_ = socket.create_connection(("127.0.0.1", port), timeout=5)
        ssl.create_default_context().wrap_socket(socket_, server_hostname="localhost")
    ca = CA()
    ca.install(cert_dir, ca.issue(("localhost",)))
    wait_until(lambda: http_ok(f"http://127.0.0.1:{admin}/readyz"), timeout=20,
               what="ready once a generation is there")  # fmt: skip
    text = requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=5).text
    assert 'proxy_handshakes_total{result="no_certificate"} 1.0' in text
    assert proc.alive()
