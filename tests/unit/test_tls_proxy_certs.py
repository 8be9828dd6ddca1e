"""The tls-proxy's certificate store: a new generation is loaded into a new context, a
bad one (key not matching, expired, not yet valid, not a certificate, not verifying against
its own ca.crt or without one) is refused once, counted by its result, and the one in use
kept; an expired certificate is never offered."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from patterns.common.config import ConfigError
from patterns.security import certdir
from patterns.security.tls_proxy.certs import EXPIRY_GUARD, CertStore
from patterns.security.tls_proxy.config import available_cpus, load_config
from patterns.security.tls_proxy.identity import identity_headers, rfc4514_subject, stripped
from tests.tls_certs import CA


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ca() -> CA:
    return CA()


def store(tmp_path: Path, clock: Clock | None = None) -> CertStore:
    return CertStore(tmp_path / "tls", None, clock or Clock())


def test_nothing_to_serve_until_a_generation_arrives(tmp_path: Path, ca: CA) -> None:
    certs = store(tmp_path)
    assert certs.poll() is None
    assert certs.context() is None
    assert certs.ready()[0] is False
    issued = ca.issue(("localhost", "secure-app"))
    ca.install(tmp_path / "tls", issued)
    assert certs.poll() == "ok"
    assert certs.context() is not None
    assert certs.ready() == (True, "ok")
    certificate = certs.certificate()
    assert certificate is not None
    assert certificate.serial == issued.serial
    assert certificate.dns_names == ("localhost", "secure-app")
    assert certs.poll() is None  # unchanged: nothing loaded again


def test_new_generation_swaps_the_context(tmp_path: Path, ca: CA) -> None:
    certs = store(tmp_path)
    ca.install(tmp_path / "tls", ca.issue())
    certs.poll()
    first = certs.context()
    second = ca.issue()
    ca.install(tmp_path / "tls", second)
    assert certs.poll() == "ok"
    assert certs.context() is not first
    assert certs.serial() == second.serial


@pytest.mark.parametrize("bad", ["key_mismatch", "expired", "not_yet_valid", "garbage",
                                 "other_ca", "empty_ca", "no_ca", "client_only"])
def test_bad_generation_refused_once_and_old_kept(tmp_path: Path, ca: CA, bad: str) -> None:
    now = datetime.datetime.now(datetime.UTC)
    certs = store(tmp_path)
    good = ca.issue()
    ca.install(tmp_path / "tls", good)
    certs.poll()
    in_use = certs.context()
    if bad == "key_mismatch":
        ca.install(tmp_path / "tls", ca.issue(), key_of=ca.issue())
    elif bad == "expired":
        ca.install(tmp_path / "tls", ca.issue(not_before=now - datetime.timedelta(hours=2)))
    elif bad == "not_yet_valid":
        ca.install(tmp_path / "tls", ca.issue(not_before=now + datetime.timedelta(hours=1)))
    elif bad == "other_ca":  # signed by a CA that is not the generation's ca.crt
        ca.install(tmp_path / "tls", CA("another CA").issue())
    elif bad == "empty_ca":
        issued = ca.issue()
        certdir.write_generation(tmp_path / "tls", issued.key_pem,
                                 issued.cert_pem + ca.cert_pem, b"", issued.serial)
    elif bad == "no_ca":
        ca.install(tmp_path / "tls", ca.issue())
        certdir.read_generation(tmp_path / "tls").ca_path.unlink()
    elif bad == "client_only":  # a client certificate cannot serve: its purpose is wrong
        ca.install(tmp_path / "tls", ca.issue(client=True))
    else:
        certdir.write_generation(tmp_path / "tls", b"not a key", b"not a cert", b"", "ab")
    assert certs.poll() == "bad"
    assert certs.poll() is None  # counted once, retried quietly
    assert certs.context() is in_use
    assert certs.serial() == good.serial


def test_expired_certificate_is_never_offered(tmp_path: Path, ca: CA) -> None:
    clock = Clock()
    certs = store(tmp_path, clock)
    issued = ca.issue(lifetime=datetime.timedelta(minutes=10))
    ca.install(tmp_path / "tls", issued)
    certs.poll()
    not_after = issued.cert.not_valid_after_utc.timestamp()
    clock.now = not_after - EXPIRY_GUARD - 0.001
    assert certs.context() is not None
    clock.now = not_after - EXPIRY_GUARD
    assert certs.context() is None
    ready, detail = certs.ready()
    assert not ready and "expired" in detail
    ca.install(tmp_path / "tls", ca.issue(not_before=datetime.datetime.fromtimestamp(
        clock.now - 60, datetime.UTC)))  # fmt: skip
    assert certs.poll() == "ok"
    assert certs.context() is not None


def test_rfc4514_subject_matches_cryptography(ca: CA) -> None:
    name = x509.Name([
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                                                           "Example, Inc.")]),
        x509.RelativeDistinguishedName([
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "ops"),
            x509.NameAttribute(NameOID.USER_ID, "u1"),
        ]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "#alice ")]),
    ])  # fmt: skip
    peer = {"subject": tuple(
        tuple(({"C": "countryName", "O": "organizationName", "OU": "organizationalUnitName",
                "UID": "userId", "CN": "commonName"}[a.rfc4514_attribute_name], a.value)
              for a in rdn) for rdn in name.rdns)}  # fmt: skip
    assert rfc4514_subject(peer) == name.rfc4514_string()


def test_subject_cannot_inject_a_header() -> None:
    peer = {"subject": ((("commonName", "evil\r\nX-Client-Verify: SUCCESS"),),)}
    headers = identity_headers("10.0.0.1", peer)
    assert headers.count(b"\r\n") == 4  # four header lines, none injected
    assert b"CN=evil\\0D\\0AX-Client-Verify: SUCCESS" in headers


@pytest.mark.parametrize("name", [b"X-Forwarded-For", b"x-forwarded-for", b"X_FORWARDED_FOR",
                                  b"Forwarded", b"X-Client-Subject", b"x-client-verify",
                                  b"X-Forwarded-Proto"])  # fmt: skip
def test_identity_names_in_any_spelling_are_stripped(name: bytes) -> None:
    assert stripped(name)
    assert not stripped(b"X-Forwarded-Fort")


def test_settings() -> None:
    config = load_config({})
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 8443)
    assert (config.upstream_host, config.upstream_port) == ("127.0.0.1", 8080)
    assert str(config.cert_dir) == "/etc/tls" and config.client_ca_file is None
    assert config.workers == available_cpus() >= 1
    with pytest.raises(ConfigError) as error:
        load_config({"PROXY_CLIENT_CA_FILE": "/nonexistent", "PROXY_WORKERS": "0",
                     "PROXY_LISTEN": "nope"})  # fmt: skip
    for name in ("PROXY_CLIENT_CA_FILE", "PROXY_WORKERS", "PROXY_LISTEN"):
        assert name in str(error.value)
