"""cert-renewer as a real process against a real cert-issuer: the key on disk and out of the
logs, the atomic switch between generations, the issuer down for longer than a renewal
interval (and back), a restart without the issuer, refusals retried without a crash loop."""

from __future__ import annotations

import os
import re
import signal
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from patterns.security import certdir, pki
from tests.conftest import ServiceProcess, free_port, http_ok, wait_until
from tests.process.test_cert_issuer import TOKEN, Issuer, metric, start_issuer

RENEWER = "patterns.security.cert_renewer"


@dataclass
class Renewer:
    proc: ServiceProcess
    admin_port: int
    cert_dir: Path

    def get(self, path: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5)

    def renewals(self, result: str = "success") -> float:
        return metric(self.admin_port, "renewer_renewals_total", result=result)

    def serial(self) -> str:
        return str(self.get("/api/certificate").json()["serial"])


def start_renewer(
    service: Callable[..., ServiceProcess], tmp_path: Path, issuer: Issuer, **env: str
) -> Renewer:
    admin_port = free_port()
    cert_dir = tmp_path / "tls"
    proc = service(RENEWER, {
        "RENEWER_ISSUER_URL": issuer.url,
        "RENEWER_CA_BUNDLE": str(issuer.ca_file),
        "RENEWER_TOKEN_FILE": str(issuer.token_file),
        "RENEWER_CERT_DIR": str(cert_dir),
        "RENEWER_DNS_NAMES": "localhost,127.0.0.1",
        "RENEWER_HTTP_HOST": "127.0.0.1",
        "RENEWER_HTTP_PORT": str(admin_port),
        "RENEWER_LIFETIME_SECONDS": "60",
        "RENEWER_RETRY_MIN_SECONDS": "0.1",
        "RENEWER_RETRY_MAX_SECONDS": "0.5",
        **env,
    }, name="cert-renewer")
    wait_until(lambda: http_ok(f"http://127.0.0.1:{admin_port}/metrics") or not proc.alive(),
               timeout=20, what="the renewer's admin port")
    assert proc.alive(), proc.output()
    return Renewer(proc, admin_port, cert_dir)


def ready(renewer: Renewer) -> bool:
    try:
        return renewer.get("/readyz").status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def issuer(service, tmp_path: Path) -> Issuer:
    return start_issuer(service, tmp_path)


@pytest.mark.parametrize(("group_readable", "mode"), [("false", 0o600), ("true", 0o640)])
def test_key_mode_on_disk_and_never_in_logs(
    service, tmp_path: Path, issuer: Issuer, group_readable: str, mode: int
) -> None:
    renewer = start_renewer(service, tmp_path, issuer, RENEWER_LIFETIME_SECONDS="3",
                            RENEWER_KEY_GROUP_READABLE=group_readable)
    wait_until(lambda: renewer.renewals() >= 3, timeout=30, what="three renewals")
    generation = certdir.read_generation(renewer.cert_dir)
    assert stat.S_IMODE(os.stat(generation.key_path).st_mode) == mode
    assert stat.S_IMODE(os.stat(renewer.cert_dir / "tls.key").st_mode) == mode
    key_pem, chain_pem, ca_pem = generation.read()
    chain = pki.load_certs(chain_pem)
    assert [pki.cert_to_pem(c) for c in chain[1:]] == [ca_pem] == [issuer.ca_file.read_bytes()]
    assert pki.key_matches_cert(pki.load_key(key_pem), chain[0])
    assert renewer.proc.stop() == 0
    logs = renewer.proc.output() + issuer.proc.output()
    body_lines = [line for line in key_pem.decode().splitlines() if "-----" not in line]
    assert body_lines and not any(line in logs for line in body_lines)
    assert "PRIVATE KEY" not in logs and TOKEN not in logs
    assert "certificate installed" in logs


def test_a_reader_never_pairs_a_key_with_another_generations_certificate(
    service, tmp_path: Path, issuer: Issuer
) -> None:
    renewer = start_renewer(service, tmp_path, issuer, RENEWER_LIFETIME_SECONDS="2")
    wait_until(lambda: renewer.renewals() >= 1, timeout=30, what="a first certificate")
    stop = threading.Event()
    counts: dict = {"checked": 0, "mismatched": 0, "generations": set(), "errors": []}

    def hammer() -> None:
        while not stop.is_set():
            try:
                generation = certdir.read_generation(renewer.cert_dir)
                key_pem, chain_pem, _ = generation.read()
            except OSError:
                continue  # removed after two switches since it was resolved: read again
            except certdir.NoGeneration as exc:  # while one exists: a failure
                counts["errors"].append(repr(exc))
                continue
            if not pki.key_matches_cert(pki.load_key(key_pem), pki.load_cert(chain_pem)):
                counts["mismatched"] += 1
            counts["checked"] += 1
            counts["generations"].add(generation.name)

    reader = threading.Thread(target=hammer)
    reader.start()
    try:
        start = renewer.renewals()
        wait_until(lambda: renewer.renewals() >= start + 8, timeout=60, what="eight renewals")
    finally:
        stop.set()
        reader.join()
    assert counts["mismatched"] == 0 and counts["errors"] == []
    assert counts["checked"] > 100 and len(counts["generations"]) >= 8


def _expires_in(body: str) -> float:
    match = re.search(r"expires in (-?[0-9.]+)s \(margin 3s\)", body)
    assert match, body
    return float(match.group(1))


def test_issuer_down_longer_than_a_renewal_interval_then_back(
    service, tmp_path: Path, issuer: Issuer
) -> None:
    renewer = start_renewer(service, tmp_path, issuer, RENEWER_LIFETIME_SECONDS="8",
                            RENEWER_EXPIRY_MARGIN_SECONDS="3")
    wait_until(lambda: ready(renewer), timeout=30, what="a certificate")
    # Stop the issuer just after a renewal: the certificate has most of its 8 s left.
    done = renewer.renewals()
    wait_until(lambda: renewer.renewals() > done, timeout=30, what="a renewal")
    issuer.proc.signal(signal.SIGKILL)
    issuer.proc.wait()
    serial = renewer.serial()
    generation = certdir.current_name(renewer.cert_dir)

    # Readiness holds while the certificate is outside the margin, then drops inside it.
    seen_ready_while_down = 0
    while True:
        response = renewer.get("/readyz")
        if response.status_code == 200:
            seen_ready_while_down += 1
            continue
        assert 0 < _expires_in(response.text) <= 3
        break
    assert seen_ready_while_down > 0
    # By then the renewal was due (at 4 s left) for over a second: it kept retrying,
    # counted, alive, with the still-valid certificate in place.
    assert renewer.renewals("issuer_unreachable") >= 3
    assert metric(renewer.admin_port, "renewer_consecutive_failures") >= 3
    assert renewer.get("/healthz").status_code == 200
    assert renewer.serial() == serial and certdir.current_name(renewer.cert_dir) == generation
    assert "connection refused" in renewer.proc.output()

    back = start_issuer(service, tmp_path, port=issuer.port, ca_dir=issuer.ca_dir)
    wait_until(lambda: ready(renewer), timeout=30, what="readiness after the issuer is back")
    assert renewer.serial() != serial
    assert back.metric("issuer_requests_total", result="issued") >= 1
    new = pki.load_cert(certdir.read_generation(renewer.cert_dir).cert_path.read_bytes())
    new.verify_directly_issued_by(pki.load_cert(issuer.ca_file.read_bytes()))
    assert metric(renewer.admin_port, "renewer_consecutive_failures") == 0
    assert "issuer reachable again" in renewer.proc.output()


def test_a_restart_reuses_the_installed_certificate_without_the_issuer(
    service, tmp_path: Path, issuer: Issuer
) -> None:
    first = start_renewer(service, tmp_path, issuer)
    wait_until(lambda: ready(first), timeout=30, what="a certificate")
    serial = first.serial()
    assert first.proc.stop() == 0
    assert issuer.proc.stop() == 0
    # Restarted with the key shared by group: the installed key's mode follows.
    again = start_renewer(service, tmp_path, issuer, RENEWER_KEY_GROUP_READABLE="true")
    wait_until(lambda: ready(again), timeout=30, what="readiness from the installed certificate")
    assert again.serial() == serial
    key_path = certdir.read_generation(again.cert_dir).key_path
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o640
    assert again.renewals("issuer_unreachable") == 0 and again.renewals() == 0
    assert "certificate reused" in again.proc.output()


def test_a_refused_name_is_logged_with_the_issuers_sentence_and_retried(
    service, tmp_path: Path, issuer: Issuer
) -> None:
    renewer = start_renewer(service, tmp_path, issuer, RENEWER_DNS_NAMES="evil.example.com")
    wait_until(lambda: renewer.renewals("refused") >= 3, timeout=30, what="three refusals")
    assert renewer.proc.alive()
    assert renewer.get("/healthz").status_code == 200
    response = renewer.get("/readyz")
    assert response.status_code == 503 and "no certificate installed yet" in response.text
    assert renewer.get("/api/certificate").status_code == 503
    assert ("the issuer answered 403: the issuer does not allow the name 'evil.example.com'"
            in renewer.proc.output())
    assert not (renewer.cert_dir / "..data").exists()


def test_an_issuer_the_bundle_does_not_vouch_for_never_gets_the_token(
    service, tmp_path: Path, issuer: Issuer
) -> None:
    _key, other_ca = pki.create_ca("someone else's CA")
    bundle = tmp_path / "other-ca.crt"
    bundle.write_bytes(pki.cert_to_pem(other_ca))
    renewer = start_renewer(service, tmp_path, issuer, RENEWER_CA_BUNDLE=str(bundle))
    wait_until(lambda: renewer.renewals("issuer_unreachable") >= 2, timeout=30,
               what="two failed attempts")
    assert "the issuer's certificate does not verify" in renewer.proc.output()
    assert issuer.metric("issuer_requests_total", result="unauthorized") == 0
    assert issuer.metric("issuer_requests_total", result="issued") == 0
    assert issuer.metric("issuer_connections_closed_total", reason="handshake_failed") >= 2


def test_a_rotated_token_is_read_at_the_next_request(
    service, tmp_path: Path, issuer: Issuer
) -> None:
    """The Secret rotates on both sides without a restart: refused (401, counted, the
    issuer's sentence logged) while the renewer's copy is stale, renewed once it is not."""
    own_token = tmp_path / "renewer-token"
    own_token.write_text(TOKEN)
    renewer = start_renewer(service, tmp_path, issuer, RENEWER_TOKEN_FILE=str(own_token),
                            RENEWER_LIFETIME_SECONDS="2")
    wait_until(lambda: renewer.renewals() >= 1, timeout=30, what="a first certificate")
    issuer.token_file.write_text("rotated-token\n")
    wait_until(lambda: renewer.renewals("refused") >= 2, timeout=30, what="refusals")
    assert "the issuer answered 401: wrong token" in renewer.proc.output()
    renewed = renewer.renewals()
    own_token.write_text("rotated-token\n")
    wait_until(lambda: renewer.renewals() > renewed, timeout=30, what="a renewal")
    assert renewer.proc.alive() and "rotated-token" not in renewer.proc.output()
