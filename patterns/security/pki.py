"""Keys, certificate requests and certificates for the security lab, on `cryptography`.

What the cert-issuer, the cert-renewer and the tests share: an ECDSA P-256 key, a PKCS#10
request for DNS names, a CA, a certificate signed for a request, and the facts a service
reports about a certificate (`CertInfo`: serial in lowercase hex, validity, DNS names).
No ASN.1 by hand: everything goes through `cryptography`'s X.509 builders.

The certificate directory's atomic generations are in `certdir.py` (standard library only,
for the tls-proxy's image, which has no `cryptography`): `read_generation(cert_dir)`
returns the current generation's `key_path, cert_path, ca_path`.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The key types a request may carry (others are refused): a P-256 key is what the renewer
# makes; P-384 and RSA of 2048 bits or more are accepted from other clients.
ALLOWED_CURVES = ("secp256r1", "secp384r1")
MIN_RSA_BITS = 2048

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (it lives on a memory-backed volume, mode 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("not an EC or RSA private key")
    return key


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(pem: bytes) -> x509.Certificate:
    """The first certificate of a PEM (a chain's leaf). ValueError if there is none."""
    return x509.load_pem_x509_certificate(pem)


def load_certs(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def serial_hex(serial: int) -> str:
    """A serial as the API and the metrics show it: lowercase hex, no leading zeros."""
    return format(serial, "x")


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def random_serial() -> int:
    """A random positive 159-bit serial (RFC 5280 allows 20 octets; the top bit clear)."""
    return secrets.randbits(159) | 1 << 158


def _parse_names(names: Iterable[str]) -> list[x509.GeneralName]:
    general: list[x509.GeneralName] = []
    for name in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    return general


def build_csr(key: PrivateKey, names: Sequence[str]) -> bytes:
    """A PEM PKCS#10 request for `names` (DNS names; IP addresses as such), CN the first."""
    if not names:
        raise ValueError("a request needs at least one name")
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName(_parse_names(names)), critical=False)
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def csr_names(csr: x509.CertificateSigningRequest) -> list[str]:
    """The request's SAN DNS names and IP addresses, in order; ValueError on any other kind."""
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names: list[str] = []
    for general in san:
        if isinstance(general, x509.DNSName):
            names.append(general.value)
        elif isinstance(general, x509.IPAddress):
            names.append(str(general.value))
        else:
            raise ValueError(f"only DNS names and IP addresses may be requested, not {general!r}")
    return names


def check_public_key(key: Any) -> str | None:
    """Why a request's public key is refused, or None if its type and size are fine."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ALLOWED_CURVES:
            return f"EC curve {key.curve.name} is not allowed (use P-256 or P-384)"
        return None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return f"an RSA key of {key.key_size} bits is too small (at least {MIN_RSA_BITS})"
        return None
    return f"{type(key).__name__} keys are not allowed (use ECDSA P-256)"


def _signing_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def create_ca(
    common_name: str = "podpatterns cert-issuer CA",
    lifetime: timedelta = timedelta(days=3650),
    key: PrivateKey | None = None,
) -> tuple[PrivateKey, x509.Certificate]:
    """A self-signed CA (basicConstraints CA, path length 0: it signs leaves only)."""
    key = key or generate_key()
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(random_serial())
        .not_valid_before(now - timedelta(seconds=60))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, _signing_hash(key))
    )
    return key, cert


def issue(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    public_key: Any,
    names: Sequence[str],
    lifetime: timedelta,
    *,
    now: datetime | None = None,
    skew: timedelta = timedelta(seconds=60),
) -> x509.Certificate:
    """A leaf for `names` (SAN DNS names / IP addresses, CN the first), valid from
    now - `skew` (clock skew between machines) to now + `lifetime`, for serverAuth and
    clientAuth, with a random serial."""
    if not names:
        raise ValueError("a certificate needs at least one name")
    now = now or datetime.now(UTC)
    key_usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )
    ca_public = ca_cert.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(now - skew)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(_parse_names(names)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if isinstance(ca_public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False
        )
    return builder.sign(ca_key, _signing_hash(ca_key))


def public_keys_equal(a: Any, b: Any) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(
        a.public_bytes(serialization.Encoding.DER, fmt)
        == b.public_bytes(serialization.Encoding.DER, fmt)
    )


def key_matches_cert(key: PrivateKey, cert: x509.Certificate) -> bool:
    return public_keys_equal(key.public_key(), cert.public_key())


def cert_dns_names(cert: x509.Certificate) -> list[str]:
    """SAN DNS names and IP addresses (as text), in order."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        g.value if isinstance(g, x509.DNSName) else str(g.value)
        for g in san
        if isinstance(g, x509.DNSName | x509.IPAddress)
    ]


@dataclass(frozen=True)
class CertInfo:
    """What the services report about a certificate (`/api/certificate`, logs, metrics)."""

    serial: str  # lowercase hex
    not_before: datetime
    not_after: datetime
    dns_names: tuple[str, ...]

    @classmethod
    def of(cls, cert: x509.Certificate) -> CertInfo:
        return cls(
            serial=serial_hex(cert.serial_number),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            dns_names=tuple(cert_dns_names(cert)),
        )

    @classmethod
    def from_pem(cls, pem: bytes) -> CertInfo:
        return cls.of(load_cert(pem))

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "not_before": rfc3339(self.not_before),
            "not_after": rfc3339(self.not_after),
            "dns_names": list(self.dns_names),
        }

    def seconds_left(self, now: datetime | None = None) -> float:
        return (self.not_after - (now or datetime.now(UTC))).total_seconds()
