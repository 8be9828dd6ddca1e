"""The security lab's pod as local processes (cert-issuer, cert-renewer, tls-proxy,
whoami-app): under continuous load across more than 20 renewals of a 4-second certificate,
and with the CA down for longer than a renewal interval.

Load: threads making a new TLS connection per request, and threads each keeping one
connection alive for the whole run. It must show: zero failed requests; every certificate
the renewer installed (after the first; the last may not have been reached yet) served to
new handshakes; no kept-alive connection broken by a renewal; no certificate ever served
after its notAfter (each handshake's certificate checked against the time it began)."""

from __future__ import annotations

import http.client
import json
import signal
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
from cryptography import x509

from patterns.security import pki
from tests.conftest import ServiceProcess, free_port, http_ok, wait_until
from tests.process.test_cert_issuer import Issuer, metric, start_issuer
from tests.process.test_cert_renewer import Renewer, start_renewer

RENEWALS = 20  # after the first certificate
NEW_CONNECTION_THREADS = 2
KEPT_ALIVE_THREADS = 2


@dataclass
class Load:
    failures: list[str] = field(default_factory=list)
    requests: int = 0
    # (time the handshake began, the served certificate's serial, its notAfter)
    handshakes: list[tuple[float, str, float]] = field(default_factory=list)
    kept_alive_requests: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


def _check(response: http.client.HTTPResponse) -> str | None:
    body = response.read()
    if response.status != 200:
        return f"HTTP {response.status}: {body[:200]!r}"
    answer = json.loads(body)
    if answer.get("proto") != "https" or answer.get("client_verify") != "NONE":
        return f"unexpected answer {answer}"
    return None


def new_connections(port: int, context: ssl.SSLContext, load: Load, stop: threading.Event
                    ) -> None:
    while not stop.is_set():
        began = time.time()
        connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
        try:
            connection.connect()
            assert connection.sock is not None
            der = connection.sock.getpeercert(binary_form=True)
            cert = x509.load_der_x509_certificate(der)
            connection.request("GET", "/", headers={"Connection": "close"})
            problem = _check(connection.getresponse())
        except Exception as exc:
            load.fail(f"new connection: {exc!r}")
            continue
        finally:
            connection.close()
        with load.lock:
            load.requests += 1
            load.handshakes.append((began, pki.serial_hex(cert.serial_number),
                                    cert.not_valid_after_utc.timestamp()))
        if problem:
            load.fail(f"new connection: {problem}")


def kept_alive(port: int, context: ssl.SSLContext, load: Load, stop: threading.Event,
               index: int) -> None:
    """One connection for the whole run: any error on it is a broken connection."""
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
    try:
        connection.connect()
        assert connection.sock is not None
        first = connection.sock.getpeercert(binary_form=True)
        while not stop.is_set():
            connection.request("GET", "/")
            problem = _check(connection.getresponse())
            if problem:
                load.fail(f"kept-alive connection {index}: {problem}")
            with load.lock:
                load.requests += 1
                load.kept_alive_requests[index] += 1
            if connection.sock is None or connection.sock.getpeercert(binary_form=True) != first:
                load.fail(f"kept-alive connection {index} was replaced")
                return
    except Exception as exc:
        load.fail(f"kept-alive connection {index} broken: {exc!r}")
    finally:
        connection.close()


def installed_serials(log_text: str) -> list[str]:
    """The serials the renewer installed, in order, from its JSON log."""
    serials = []
    for line in log_text.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("message") == "certificate installed":
                serials.append(entry["serial"])
    return serials


@dataclass
class Pod:
    issuer: Issuer
    renewer: Renewer
    app: ServiceProcess
    proxy: ServiceProcess
    proxy_port: int
    proxy_admin: int

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.issuer.ca_file))

    def processes(self) -> list[ServiceProcess]:
        return [self.proxy, self.renewer.proc, self.app, self.issuer.proc]


def start_pod(service, tmp_path: Path, **renewer_env: str) -> Pod:
    issuer = start_issuer(service, tmp_path)
    app_port, proxy_port, proxy_admin = free_port(), free_port(), free_port()
    app = service("patterns.security.whoami_app", {
        "WHOAMI_APP_HOST": "127.0.0.1", "WHOAMI_APP_PORT": str(app_port),
    }, name="whoami-app")
    renewer = start_renewer(service, tmp_path, issuer, RENEWER_DNS_NAMES="localhost",
                            **renewer_env)
    proxy = service("patterns.security.tls_proxy", {
        "PROXY_LISTEN": f"127.0.0.1:{proxy_port}",
        "PROXY_UPSTREAM": f"127.0.0.1:{app_port}",
        "PROXY_CERT_DIR": str(renewer.cert_dir),
        "PROXY_HTTP_HOST": "127.0.0.1",
        "PROXY_HTTP_PORT": str(proxy_admin),
        "PROXY_RELOAD_SECONDS": "0.1",
        "PROXY_WORKERS": "1",
    }, name="tls-proxy")
    wait_until(lambda: http_ok(f"http://127.0.0.1:{proxy_admin}/readyz") or not proxy.alive(),
               timeout=30, what="the proxy to serve a certificate")
    wait_until(lambda: http_ok(f"http://127.0.0.1:{app_port}/readyz") or not app.alive(),
               timeout=30, what="the app")
    assert proxy.alive() and app.alive(), proxy.output() + app.output()
    return Pod(issuer, renewer, app, proxy, proxy_port, proxy_admin)


@pytest.mark.timeout(240)
def test_renewals_under_load(service, tmp_path: Path) -> None:
    # A renewal every 2 s, as a 4 s certificate renewed at half its life would give, but
    # with 6 s between a renewal being due and its certificate's notAfter: on a machine
    # busy enough to hold the renewer back 2 s, a 4 s certificate expired before its
    # successor was installed and the proxy rightly refused handshakes.
    pod = start_pod(service, tmp_path, RENEWER_LIFETIME_SECONDS="8",
                    RENEWER_RENEW_FRACTION="0.25")
    issuer, renewer, proxy_port = pod.issuer, pod.renewer, pod.proxy_port

    context = ssl.create_default_context(cafile=str(issuer.ca_file))
    load = Load(kept_alive_requests=[0] * KEPT_ALIVE_THREADS)
    stop = threading.Event()
    threads = [threading.Thread(target=new_connections, args=(proxy_port, context, load, stop))
               for _ in range(NEW_CONNECTION_THREADS)]
    threads += [threading.Thread(target=kept_alive, args=(proxy_port, context, load, stop, i))
                for i in range(KEPT_ALIVE_THREADS)]
    start = renewer.renewals()
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: renewer.renewals() >= start + RENEWALS or load.failures,
                   timeout=150, interval=0.2, what=f"{RENEWALS} renewals under load")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    assert load.failures == [], load.failures[:5]
    installed = installed_serials(renewer.proc.output())
    assert len(installed) >= RENEWALS + 1
    served = {serial for _, serial, _ in load.handshakes}
    missed = [s for s in installed[1:-1] if s not in served]
    assert missed == [], f"installed but never served to a new handshake: {missed}"
    expired = [(began, serial, not_after) for began, serial, not_after in load.handshakes
               if not_after < began]
    assert expired == [], f"served after notAfter: {expired[:5]}"
    assert all(count > 0 for count in load.kept_alive_requests), load.kept_alive_requests
    assert metric(renewer.admin_port, "renewer_renewals_total", result="issuer_unreachable") == 0
    print(f"{len(installed) - 1} renewals crossed: {load.requests} requests, "
          f"{len(load.handshakes)} new handshakes, {len(served)} serials served, "
          f"kept-alive requests {load.kept_alive_requests}, 0 failed")
    for proc in pod.processes():
        assert proc.stop() == 0, proc.output()[-2000:]


def handshake(pod: Pod, verify: bool = True) -> tuple[float, x509.Certificate] | str:
    """One request on a new connection: (when its handshake began, the served
    certificate), or why it failed. Without `verify` an expired certificate is taken too,
    so that the test, not the client, sees whether one was served."""
    began = time.time()
    context = pod.context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection("localhost", pod.proxy_port,
                                             context=context, timeout=10)
    try:
        connection.connect()
        assert connection.sock is not None
        cert = x509.load_der_x509_certificate(connection.sock.getpeercert(binary_form=True))
        connection.request("GET", "/", headers={"Connection": "close"})
        problem = _check(connection.getresponse())
    except (OSError, http.client.HTTPException) as exc:
        return repr(exc)
    finally:
        connection.close()
    return problem or (began, cert)


@pytest.mark.timeout(180)
def test_ca_down_longer_than_a_renewal_interval(service, tmp_path: Path) -> None:
    """The issuer killed just after a renewal: the proxy keeps serving the still-valid
    certificate past the point the renewal was due, never past its notAfter, and serves
    the next one once the issuer is back."""
    pod = start_pod(service, tmp_path, RENEWER_LIFETIME_SECONDS="8",
                    RENEWER_EXPIRY_MARGIN_SECONDS="3")
    renewer = pod.renewer
    done = renewer.renewals()
    wait_until(lambda: renewer.renewals() > done, timeout=30, what="a renewal")
    pod.issuer.proc.signal(signal.SIGKILL)
    pod.issuer.proc.wait()
    current = renewer.get("/api/certificate").json()
    serial = current["serial"]
    due = datetime.fromisoformat(current["renew_at"].replace("Z", "+00:00")).timestamp()

    def serves_current() -> bool:  # the proxy picks it up within its reload interval
        result = handshake(pod)
        return not isinstance(result, str) and pki.serial_hex(result[1].serial_number) == serial

    wait_until(serves_current, timeout=10, what="the proxy serving the renewed certificate")

    served_after_due = 0
    while True:
        result = handshake(pod, verify=False)
        if isinstance(result, str):
            break  # refused: the proxy stops before notAfter
        began, cert = result
        assert pki.serial_hex(cert.serial_number) == serial
        assert cert.not_valid_after_utc.timestamp() >= began
        served_after_due += began > due
    assert served_after_due > 0, "the proxy stopped serving before the renewal was even due"
    assert renewer.renewals("issuer_unreachable") >= 3
    wait_until(lambda: renewer.get("/readyz").status_code == 503, timeout=10,
               what="the renewer unready inside the margin")
    assert renewer.get("/healthz").status_code == 200

    start_issuer(service, tmp_path, port=pod.issuer.port, ca_dir=pod.issuer.ca_dir)
    wait_until(lambda: renewer.get("/readyz").status_code == 200, timeout=30,
               what="the renewer ready again")
    result = wait_until(lambda: not isinstance(r := handshake(pod), str) and r, timeout=30,
                        what="the proxy serving again")
    assert pki.serial_hex(result[1].serial_number) != serial
    assert http_ok(f"http://127.0.0.1:{pod.proxy_admin}/readyz")
