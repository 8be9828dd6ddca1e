"""cert-issuer's policy (token, names, lifetime, request form) and settings, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from patterns.common.config import ConfigError
from patterns.security import pki
from patterns.security.cert_issuer.ca import CAError, init_ca
from patterns.security.cert_issuer.config import DEFAULT_ALLOWED_NAMES, load_config
from patterns.security.cert_issuer.policy import Refusal, authorize, name_allowed, parse

ALLOWED = ("localhost", "127.0.0.1", "*.podpatterns-security.svc")


def _body(csr: bytes | str, **more: object) -> bytes:
    text = csr.decode() if isinstance(csr, bytes) else csr
    return json.dumps({"csr": text, **more}).encode()


def _refusal(body: bytes, max_lifetime: int = 3600) -> Refusal:
    with pytest.raises(Refusal) as caught:
        parse(body, max_lifetime, ALLOWED)
    return caught.value


@pytest.mark.parametrize(("name", "allowed"), [
    ("localhost", True),
    ("LOCALHOST", True),
    ("web.podpatterns-security.svc", True),
    ("podpatterns-security.svc", False),  # "*." needs one label
    ("a.b.podpatterns-security.svc", False),  # and only one
    ("web.podpatterns-security.svc.evil", False),
    ("127.0.0.1", True),
    ("127.0.0.2", False),
])
def test_name_allowed(name: str, allowed: bool) -> None:
    assert name_allowed(name, ALLOWED) is allowed


def test_defaults_allow_the_pods_names() -> None:
    for name in ("localhost", "secure-app", "secure-app.podpatterns-security.svc",
                 "secure-app.podpatterns-security.svc.cluster.local"):
        assert name_allowed(name, DEFAULT_ALLOWED_NAMES)


def test_authorize() -> None:
    authorize("Bearer s3cret", b"s3cret")
    authorize("bearer  s3cret ", b"s3cret")
    for header, words in [
        (None, "missing Authorization"),
        ("Basic czNjcmV0", "must be Bearer <token>"),
        ("Bearer", "must be Bearer <token>"),
        ("Bearer s3cre", "wrong token"),
        ("Bearer s3cret2", "wrong token"),
    ]:
        with pytest.raises(Refusal) as caught:
            authorize(header, b"s3cret")
        assert caught.value.status == 401 and words in caught.value.error
        assert "s3cret" not in caught.value.error
    with pytest.raises(Refusal, match="no token configured"):
        authorize("Bearer ", b"")  # an empty token file admits nobody


def test_parse_accepts_and_normalizes() -> None:
    csr = pki.build_csr(pki.generate_key(), ["LocalHost", "127.0.0.1"])
    wanted = parse(_body(csr, lifetime_seconds=60), 3600, ALLOWED)
    assert wanted.names == ("localhost", "127.0.0.1") and wanted.lifetime_seconds == 60
    assert parse(_body(csr), 3600, ALLOWED).lifetime_seconds == 3600


def test_parse_refusals() -> None:
    key = pki.generate_key()
    good = pki.build_csr(key, ["localhost"])
    assert _refusal(_body(good, lifetime_seconds=3601)).status == 422
    assert _refusal(_body(good, lifetime_seconds=0)).status == 400
    assert _refusal(_body(good, lifetime_seconds=True)).status == 400
    assert _refusal(b"\xff\xfe").status == 400
    assert _refusal(json.dumps({"csr": 5}).encode()).status == 400
    wildcard = _refusal(_body(pki.build_csr(key, ["*.podpatterns-security.svc"])))
    assert wildcard.status == 422 and "not a valid DNS name" in wildcard.error
    many = _refusal(_body(pki.build_csr(key, [f"h{i}.podpatterns-security.svc"
                                              for i in range(21)])))
    assert many.status == 422 and "more than 20 names" in many.error
    no_san = (x509.CertificateSigningRequestBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
              .sign(key, hashes.SHA256()))
    refusal = _refusal(_body(no_san.public_bytes(serialization.Encoding.PEM)))
    assert refusal.status == 422 and "names no DNS name" in refusal.error
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak = _refusal(_body(pki.build_csr(small, ["localhost"])))
    assert weak.status == 422 and "1024 bits is too small" in weak.error


def test_config_defaults_and_errors(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t\n")
    config = load_config({"ISSUER_TOKEN_FILE": str(token)})
    assert (config.listen_host, config.listen_port, config.admin_port) == ("0.0.0.0", 8444, 9106)
    assert config.max_lifetime_seconds == 86400
    assert config.ca_dir == Path("/var/lib/cert-issuer")
    assert config.server_names == ("cert-issuer", "localhost")
    assert config.read_token() == b"t"
    token.write_text("")
    with pytest.raises(ConfigError, match="the token is empty"):
        load_config({"ISSUER_TOKEN_FILE": str(token)})
    token.write_text("t")
    with pytest.raises(ConfigError, match="ISSUER_MAX_LIFETIME_SECONDS='0'"):
        load_config({"ISSUER_TOKEN_FILE": str(token), "ISSUER_MAX_LIFETIME_SECONDS": "0"})


def test_ca_dir_checks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ca, created = init_ca(tmp_path / "ca")
    assert created
    again, created = init_ca(tmp_path / "ca")
    assert not created and again.info == ca.info
    # A Secret mounted for a non-root user: group-readable, and its ..data entries.
    (tmp_path / "ca" / "ca.key").chmod(0o440)
    (tmp_path / "ca" / "..data").mkdir()
    with caplog.at_level("WARNING"):
        init_ca(tmp_path / "ca")
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []
    (tmp_path / "ca" / "ca.key").chmod(0o644)
    with caplog.at_level("WARNING"):
        init_ca(tmp_path / "ca")
    assert "the CA key is readable by every user" in caplog.text
    other_key, _ = pki.create_ca()
    (tmp_path / "ca" / "ca.key").write_bytes(pki.key_to_pem(other_key))
    with pytest.raises(CAError, match=r"ca\.key does not match ca\.crt"):
        init_ca(tmp_path / "ca")
