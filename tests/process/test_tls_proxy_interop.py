"""tls-proxy against the standard clients: `openssl s_client` verifies the chain to the
CA, negotiates TLS 1.3 (and TLS 1.2 when asked; nothing older), and is served the
installed certificate's serial; `curl` gets through with the CA bundle, and with mutual
TLS only with a client certificate."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.conftest import ServiceProcess, free_port, http_ok, require_tool, wait_until
from tests.tls_certs import CA, Issued

APT = "apt-get install -y openssl curl"


@dataclass
class Proxy:
    port: int
    ca_file: Path
    served: Issued
    tmp: Path


@pytest.fixture
def proxy(tmp_path: Path, service: Callable[..., ServiceProcess]) -> Iterator[Callable[..., Proxy]]:
    app_port = free_port()
    service("patterns.security.whoami_app", {"WHOAMI_APP_PORT": str(app_port)})
    wait_until(lambda: http_ok(f"http://127.0.0.1:{app_port}/healthz"), timeout=20,
               what="whoami-app")  # fmt: skip

    def start(client_ca: Path | None = None) -> Proxy:
        ca = CA()
        served = ca.issue(("localhost",))
        cert_dir = tmp_path / "tls"
        ca.install(cert_dir, served)
        port, admin = free_port(), free_port()
        env = {"PROXY_LISTEN": f"127.0.0.1:{port}", "PROXY_HTTP_PORT": str(admin),
               "PROXY_UPSTREAM": f"127.0.0.1:{app_port}", "PROXY_CERT_DIR": str(cert_dir),
               "PROXY_WORKERS": "1"}  # fmt: skip
        if client_ca is not None:
            env["PROXY_CLIENT_CA_FILE"] = str(client_ca)
        service("patterns.security.tls_proxy", env)
        wait_until(lambda: http_ok(f"http://127.0.0.1:{admin}/readyz"), timeout=20,
                   what="tls-proxy ready")  # fmt: skip
        return Proxy(port, ca.write(tmp_path / "ca.crt"), served, tmp_path)

    yield start


def s_client(proxy: Proxy, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    openssl = require_tool("openssl", APT)
    return subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{proxy.port}", "-servername", "localhost",
         "-CAfile", str(proxy.ca_file), "-verify_hostname", "localhost", *args],
        input=stdin, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def served_serial(s_client_output: str) -> int:
    openssl = require_tool("openssl", APT)
    result = subprocess.run([openssl, "x509", "-noout", "-serial"], input=s_client_output,
                            capture_output=True, text=True, check=True, timeout=30)  # fmt: skip
    return int(result.stdout.strip().removeprefix("serial="), 16)


@pytest.mark.parametrize(("flag", "protocol"), [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2"),
                                                (None, "TLSv1.3")])  # fmt: skip
def test_openssl_s_client(proxy: Callable[..., Proxy], flag: str | None, protocol: str) -> None:
    running = proxy()
    result = s_client(running, *([flag] if flag else []))
    assert "Verify return code: 0 (ok)" in result.stdout, result.stdout + result.stderr
    negotiated = re.search(r"^New, (TLSv1\.\d), Cipher is (\S+)", result.stdout, re.MULTILINE)
    assert negotiated is not None and negotiated.group(1) == protocol, result.stdout
    assert served_serial(result.stdout) == running.served.cert.serial_number


def test_nothing_older_than_tls_1_2(proxy: Callable[..., Proxy]) -> None:
    running = proxy()
    result = s_client(running, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert result.returncode != 0
    assert "alert protocol version" in result.stderr, result.stderr
    assert "New, (NONE), Cipher is (NONE)" in result.stdout


def curl(proxy: Proxy, *args: str) -> subprocess.CompletedProcess[str]:
    binary = require_tool("curl", APT)
    return subprocess.run(
        [binary, "--silent", "--show-error", "--cacert", str(proxy.ca_file), *args,
         f"https://localhost:{proxy.port}/"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_curl(proxy: Callable[..., Proxy]) -> None:
    running = proxy()
    result = curl(running, "-H", "X-Forwarded-For: 6.6.6.6")
    assert result.returncode == 0, result.stderr
    assert '"client_address":"127.0.0.1"' in result.stdout
    assert '"proto":"https"' in result.stdout


def test_curl_and_openssl_with_mutual_tls(proxy: Callable[..., Proxy], tmp_path: Path) -> None:
    clients = CA("client CA")
    running = proxy(client_ca=clients.write(tmp_path / "clients.crt"))
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "podpatterns"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "curl-client")])  # fmt: skip
    cert, key = clients.issue(client=True, subject=subject).write(tmp_path, "client")

    refused = curl(running)
    assert refused.returncode != 0
    assert "certificate required" in refused.stderr, refused.stderr

    result = curl(running, "--cert", str(cert), "--key", str(key))
    assert result.returncode == 0, result.stderr
    assert '"client_subject":"CN=curl-client,O=podpatterns"' in result.stdout
    assert '"client_verify":"SUCCESS"' in result.stdout

    # The alert as openssl reports it. TLS 1.3 clients finish their side of the handshake
    # first and read the server's verdict next: -ign_eof keeps s_client reading for it.
    request = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    no_cert = s_client(running, "-ign_eof", stdin=request)
    assert "certificate required" in no_cert.stdout + no_cert.stderr
