"""Test certificates for the tls-proxy's tests, made with `cryptography` directly: a CA,
server certificates of any validity (expired, not yet valid) and client certificates,
and generations written into a certificate directory the way the cert-renewer does."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from patterns.security import certdir


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def key_pem(self) -> bytes:
        return _pem_key(self.key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def serial(self) -> str:
        return format(self.cert.serial_number, "x")

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """`<name>.key` and `<name>.crt` in `directory`; returns (cert, key)."""
        key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
        key_path.write_bytes(self.key_pem)
        key_path.chmod(0o600)
        cert_path.write_bytes(self.cert_pem)
        return cert_path, key_path


class CA:
    def __init__(self, name: str = "podpatterns test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(days=1))
            .not_valid_after(_now() + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.cert_pem)
        return path

    def issue(
        self,
        dns_names: tuple[str, ...] = ("localhost",),
        *,
        subject: x509.Name | None = None,
        not_before: datetime.datetime | None = None,
        lifetime: datetime.timedelta = datetime.timedelta(hours=1),
        client: bool = False,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or _now() - datetime.timedelta(seconds=60)
        name = subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])])
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + lifetime)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )  # fmt: skip
        if not client:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
        return Issued(key, builder.sign(self.key, hashes.SHA256()))

    def install(self, cert_dir: Path, issued: Issued, *, key_of: Issued | None = None) -> str:
        """Write `issued` as the directory's new generation (with the key of `key_of`, to
        make a key that does not match); returns the generation's name."""
        key_pem = (key_of or issued).key_pem
        generation = certdir.write_generation(
            cert_dir, key_pem, issued.cert_pem + self.cert_pem, self.cert_pem, issued.serial)
        return generation.name
