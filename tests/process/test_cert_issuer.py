"""cert-issuer as a real process: what it signs, what it refuses (each with a clear error),
its CA directory, and peers that cannot lock a caller out.

The helpers here (`Issuer`, `start_issuer`, `post`) are shared by the renewer's and the
whole lab's process tests."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from patterns.security import pki
from tests.conftest import ROOT, ServiceProcess, free_port, http_ok, wait_until

TOKEN = "bootstrap-token-for-tests-7f3a9c"
ISSUER = "patterns.security.cert_issuer"


@dataclass
class Issuer:
    proc: ServiceProcess
    port: int
    admin_port: int
    ca_dir: Path
    token_file: Path

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.ca_dir / "ca.crt"

    def metric(self, name: str, **labels: str) -> float:
        return metric(self.admin_port, name, **labels)


def metric(admin_port: int, name: str, **labels: str) -> float:
    """One sample's value from a service's /metrics (0 if absent)."""
    text = requests.get(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    sample = f"{name}{{{wanted}}}" if labels else name
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == sample:
            return float(value)
    return 0.0


def start_issuer(
    service: Callable[..., ServiceProcess],
    tmp_path: Path,
    *,
    port: int | None = None,
    admin_port: int | None = None,
    ca_dir: Path | None = None,
    **env: str,
) -> Issuer:
    token_file = tmp_path / "token"
    if not token_file.exists():
        token_file.write_text(TOKEN + "\n")
    ca_dir = ca_dir or tmp_path / "ca"
    port = port or free_port()
    admin_port = admin_port or free_port()
    proc = service(ISSUER, {
        "ISSUER_LISTEN": f"127.0.0.1:{port}",
        "ISSUER_HTTP_HOST": "127.0.0.1",
        "ISSUER_HTTP_PORT": str(admin_port),
        "ISSUER_CA_DIR": str(ca_dir),
        "ISSUER_TOKEN_FILE": str(token_file),
        "ISSUER_ALLOWED_NAMES": "localhost,127.0.0.1,*.podpatterns-security.svc",
        "ISSUER_MAX_LIFETIME_SECONDS": "3600",
        **env,
    }, name="cert-issuer")
    wait_until(lambda: http_ok(f"http://127.0.0.1:{admin_port}/readyz") or not proc.alive(),
               timeout=20, what="the issuer to be ready")
    assert proc.alive(), proc.output()
    return Issuer(proc, port, admin_port, ca_dir, token_file)


def post(
    issuer: Issuer,
    body: bytes | dict,
    token: str | None = TOKEN,
    *,
    path: str = "/v1/certificates",
    method: str = "POST",
) -> tuple[int, dict]:
    """One API request over verified HTTPS: (status, JSON answer)."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    context = ssl.create_default_context(cafile=str(issuer.ca_file))
    connection = http.client.HTTPSConnection("localhost", issuer.port, context=context,
                                             timeout=10)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def csr_for(*names: str, key: pki.PrivateKey | None = None) -> str:
    return pki.build_csr(key or pki.generate_key(), list(names)).decode()


@pytest.fixture
def issuer(service, tmp_path: Path) -> Issuer:
    return start_issuer(service, tmp_path)


def test_signs_a_request_for_allowed_names(issuer: Issuer) -> None:
    key = pki.generate_key()
    status, answer = post(issuer, {"csr": csr_for("localhost", "web.podpatterns-security.svc",
                                                  key=key), "lifetime_seconds": 120})
    assert status == 201, answer
    cert, ca = pki.load_cert(answer["certificate"].encode()), pki.load_cert(answer["ca"].encode())
    cert.verify_directly_issued_by(ca)
    assert ca == pki.load_cert(issuer.ca_file.read_bytes())
    assert pki.key_matches_cert(key, cert)
    info = pki.CertInfo.of(cert)
    assert info.dns_names == ("localhost", "web.podpatterns-security.svc")
    assert answer["serial"] == info.serial
    assert answer["not_after"] == pki.rfc3339(info.not_after)
    assert 119 <= (info.not_after - info.not_before).total_seconds() - 60 <= 120
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {u.dotted_string for u in usages} == {"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"}
    # No lifetime asked for: the maximum.
    status, answer = post(issuer, {"csr": csr_for("localhost")})
    info = pki.CertInfo.from_pem(answer["certificate"].encode())
    assert status == 201 and (info.not_after - info.not_before).total_seconds() - 60 >= 3599
    assert issuer.metric("issuer_requests_total", result="issued") == 2


def test_ca_created_on_first_start_and_kept(service, tmp_path: Path, issuer: Issuer) -> None:
    assert stat.S_IMODE(os.stat(issuer.ca_dir / "ca.key").st_mode) == 0o600
    serial = pki.CertInfo.from_pem(issuer.ca_file.read_bytes()).serial
    assert requests.get(f"http://127.0.0.1:{issuer.admin_port}/api/ca",
                        timeout=5).json()["serial"] == serial
    assert issuer.proc.stop() == 0
    again = start_issuer(service, tmp_path)
    assert pki.CertInfo.from_pem(again.ca_file.read_bytes()).serial == serial


def _init_ca(ca_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", ISSUER, "init-ca"], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "ISSUER_CA_DIR": str(ca_dir)}, timeout=60, check=False,
    )


def test_init_ca_creates_once_and_refuses_a_foreign_directory(tmp_path: Path) -> None:
    first = _init_ca(tmp_path / "ca")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"CA created in {tmp_path / 'ca'}: serial ")
    serial = pki.CertInfo.from_pem((tmp_path / "ca" / "ca.crt").read_bytes()).serial
    assert serial in first.stdout
    assert stat.S_IMODE(os.stat(tmp_path / "ca" / "ca.key").st_mode) == 0o600
    second = _init_ca(tmp_path / "ca")
    assert second.returncode == 0 and "already present" in second.stdout and serial in second.stdout
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a CA")
    refused = _init_ca(tmp_path / "other")
    assert refused.returncode == 1
    assert "holds notes.txt but no ca.key and ca.crt" in refused.stderr
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "ca.crt").write_bytes((tmp_path / "ca" / "ca.crt").read_bytes())
    half = _init_ca(tmp_path / "half")
    assert half.returncode == 1 and "cannot read ca.key and ca.crt" in half.stderr


def _bad_signature_csr() -> str:
    der = bytearray(x509.load_pem_x509_csr(csr_for("localhost").encode()).public_bytes(
        serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature's bits
    body = base64.encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


REFUSALS = [
    # (id, the body (made at test time), token, status, result, the error's words)
    ("wrong-token", lambda: {"csr": csr_for("localhost")}, "not-the-token", 401, "unauthorized",
     "wrong token"),
    ("no-token", lambda: {"csr": csr_for("localhost")}, None, 401, "unauthorized",
     "missing Authorization: Bearer <token> header"),
    ("name-not-allowed", lambda: {"csr": csr_for("localhost", "evil.example.com")}, TOKEN, 403,
     "forbidden_name", "the issuer does not allow the name 'evil.example.com'"),
    ("wildcard-two-labels", lambda: {"csr": csr_for("a.b.podpatterns-security.svc")}, TOKEN,
     403, "forbidden_name", "does not allow the name 'a.b.podpatterns-security.svc'"),
    ("lifetime-over-max", lambda: {"csr": csr_for("localhost"), "lifetime_seconds": 3601},
     TOKEN, 422, "lifetime_too_long", "lifetime_seconds 3601 is over the maximum of 3600"),
    ("lifetime-not-int", lambda: {"csr": csr_for("localhost"), "lifetime_seconds": "10"},
     TOKEN, 400, "bad_request", '"lifetime_seconds" must be a positive integer'),
    ("not-json", lambda: b"{not json", TOKEN, 400, "bad_request", "the body is not valid JSON"),
    ("not-an-object", lambda: b"[1, 2]", TOKEN, 400, "bad_request",
     "the body must be a JSON object"),
    ("not-pem", lambda: {"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"}, TOKEN, 400,
     "bad_request", '"csr" is not a PEM PKCS#10 certificate request'),
    ("bad-signature", lambda: {"csr": _bad_signature_csr()}, TOKEN, 422, "invalid_csr",
     "the request's signature does not verify"),
]


@pytest.mark.parametrize(("body", "token", "status", "result", "error"),
                         [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_are_clear(issuer: Issuer, body, token, status, result, error) -> None:
    got_status, answer = post(issuer, body(), token)
    assert got_status == status
    assert error in answer["error"]
    assert issuer.metric("issuer_requests_total", result=result) == 1
    assert issuer.metric("issuer_requests_total", result="issued") == 0
    assert TOKEN not in issuer.proc.output()


def test_body_over_64_kib_is_413_and_other_paths_404_405(issuer: Issuer) -> None:
    status, answer = post(issuer, b"x" * (64 * 1024 + 1))
    assert status == 413 and answer["error"] == "the body is over 65536 bytes"
    status, answer = post(issuer, b"", path="/v1/nothing")
    assert status == 404 and "use POST /v1/certificates" in answer["error"]
    status, answer = post(issuer, b"", method="GET")
    assert status == 405 and answer["error"] == "use POST /v1/certificates"
    assert issuer.metric("issuer_requests_total", result="too_large") == 1


def test_rotated_token_counts_at_once(issuer: Issuer) -> None:
    issuer.token_file.write_text("the-new-token\n")
    status, answer = post(issuer, {"csr": csr_for("localhost")})
    assert status == 401 and answer["error"] == "wrong token"
    status, _ = post(issuer, {"csr": csr_for("localhost")}, "the-new-token")
    assert status == 201


def test_idle_trickling_and_garbage_peers_do_not_lock_out_a_caller(issuer: Issuer) -> None:
    """More idle connections than the table holds, peers trickling a handshake a byte at a
    time, and peers sending garbage: a good caller is still served, promptly."""
    hostile: list[socket.socket] = []
    stop = threading.Event()

    def trickle(sock: socket.socket) -> None:
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64)
        for byte in hello:
            if stop.wait(0.2):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return

    threads = []
    try:
        for i in range(100):
            sock = socket.create_connection(("127.0.0.1", issuer.port))
            hostile.append(sock)
            if i % 10 == 0:
                thread = threading.Thread(target=trickle, args=(sock,), daemon=True)
                thread.start()
                threads.append(thread)
            elif i % 10 == 1:
                sock.send(b"GET / HTTP/1.1\r\n\r\n" + os.urandom(200))
        for _ in range(3):  # each within post()'s socket timeout, or it raises
            status, answer = post(issuer, {"csr": csr_for("localhost")})
            assert status == 201, answer
        assert issuer.metric("issuer_connections_closed_total", reason="evicted") > 0
        assert issuer.metric("issuer_connections_closed_total", reason="handshake_failed") > 0
    finally:
        stop.set()
        for sock in hostile:
            sock.close()
        for thread in threads:
            thread.join()
    assert issuer.proc.alive()


def test_a_request_cannot_outlast_its_deadline(issuer: Issuer) -> None:
    """A peer that completes the handshake and then sends its request a byte at a time is
    cut off at the request deadline, counted."""
    context = ssl.create_default_context(cafile=str(issuer.ca_file))
    raw = socket.create_connection(("127.0.0.1", issuer.port))
    sock = context.wrap_socket(raw, server_hostname="localhost")
    closed = False
    try:  # 23 s of trickling if nothing cut it off
        for byte in b"POST /v1/certificates HTTP/1.1\r\n" + b"X: " + b"a" * 200:
            sock.send(bytes([byte]))
            time.sleep(0.1)
    except OSError:
        closed = True
    finally:
        sock.close()
    assert closed
    assert issuer.metric("issuer_connections_closed_total", reason="request_timeout") == 1


def test_config_errors_name_the_variable(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", ISSUER], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "ISSUER_TOKEN_FILE": str(tmp_path / "missing"),
             "ISSUER_ALLOWED_NAMES": "ok.example,bad name"},
        check=False,
    )
    assert result.returncode == 2
    assert re.search(r"ISSUER_TOKEN_FILE='.*missing': No such file", result.stderr)
    assert "ISSUER_ALLOWED_NAMES item 'bad name'" in result.stderr


def test_a_directory_that_is_not_a_ca_stops_the_issuer_naming_it(tmp_path: Path) -> None:
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca" / "notes.txt").write_text("not a CA")
    (tmp_path / "token").write_text(TOKEN)
    result = subprocess.run(
        [sys.executable, "-m", ISSUER], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "ISSUER_CA_DIR": str(tmp_path / "ca"),
             "ISSUER_TOKEN_FILE": str(tmp_path / "token"),
             "ISSUER_LISTEN": f"127.0.0.1:{free_port()}", "ISSUER_HTTP_HOST": "127.0.0.1",
             "ISSUER_HTTP_PORT": str(free_port())},
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"cert-issuer: configuration error: ISSUER_CA_DIR={tmp_path / 'ca'} holds notes.txt "
        "but no ca.key and ca.crt: give the issuer an empty directory or its CA"
    ]
    assert "Traceback" not in result.stdout

