"""The issuer's CA on disk (`ISSUER_CA_DIR`: ca.key 0600, ca.crt) and what it signs,
including the issuer's own serving certificate, which stays in memory."""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from patterns.common.fsync import fsync_directory
from patterns.security import pki

log = logging.getLogger(__name__)

CA_KEY = "ca.key"
CA_CERT = "ca.crt"
CA_LIFETIME = timedelta(days=3650)
# The issuer's own HTTPS certificate: issued at start and again once half of it has passed.
SERVING_LIFETIME = timedelta(days=7)


class CAError(Exception):
    """The CA directory cannot be used (half a CA, a key that does not match...)."""


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    pem: bytes
    info: pki.CertInfo


class CertificateAuthority:
    def __init__(self, key: pki.PrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert
        self.cert_pem = pki.cert_to_pem(cert)
        self.info = pki.CertInfo.of(cert)

    def sign(self, public_key: Any, names: tuple[str, ...], lifetime_seconds: int) -> Issued:
        cert = pki.issue(self.key, self.cert, public_key, names,
                         timedelta(seconds=lifetime_seconds))
        return Issued(cert=cert, pem=pki.cert_to_pem(cert), info=pki.CertInfo.of(cert))

    def serving_context(self, names: tuple[str, ...]) -> tuple[ssl.SSLContext, datetime]:
        """A TLS server context with a fresh key and certificate for `names` (chain: leaf,
        CA), and when to make the next one. The key never touches a disk: it is loaded
        through an anonymous memory file (memfd)."""
        key = pki.generate_key()
        now = datetime.now(UTC)
        cert = pki.issue(self.key, self.cert, key.public_key(), names, SERVING_LIFETIME, now=now)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.options |= ssl.OP_NO_COMPRESSION
        with _memory_file(pki.key_to_pem(key)) as key_path, _memory_file(
            pki.cert_to_pem(cert) + self.cert_pem
        ) as cert_path:
            context.load_cert_chain(cert_path, key_path)
        return context, now + SERVING_LIFETIME / 2


@contextlib.contextmanager
def _memory_file(data: bytes) -> Iterator[str]:
    """A path to `data` that exists only in memory: ssl loads keys from paths only."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("issuer-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as directory:  # mode 0700; removed at once
        path = Path(directory) / "file.pem"
        path.write_bytes(data)
        yield str(path)


def init_ca(ca_dir: Path) -> tuple[CertificateAuthority, bool]:
    """Load the CA in `ca_dir`, creating it first if the directory is missing or empty.
    Returns (ca, created). CAError if the directory holds half a CA or something else."""
    key_path, cert_path = ca_dir / CA_KEY, ca_dir / CA_CERT
    if not key_path.exists() and not cert_path.exists():
        ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        visible = [entry for entry in os.listdir(ca_dir) if not entry.startswith(".")]
        if visible:
            raise CAError(
                f"{ca_dir} holds {', '.join(sorted(visible)[:5])} but no {CA_KEY} and "
                f"{CA_CERT}: give the issuer an empty directory or its CA"
            )
        key, cert = pki.create_ca(lifetime=CA_LIFETIME)
        # The certificate first: a crash between the two leaves no key without it, and
        # "half a CA" is then reported instead of a new CA made silently over it.
        _write_atomically(cert_path, pki.cert_to_pem(cert), 0o644)
        _write_atomically(key_path, pki.key_to_pem(key), 0o600)
        return CertificateAuthority(key, cert), True
    try:
        key_pem, cert_pem = key_path.read_bytes(), cert_path.read_bytes()
    except OSError as exc:
        raise CAError(f"{ca_dir}: cannot read {CA_KEY} and {CA_CERT}: {exc.strerror}") from None
    try:
        key, cert = pki.load_key(key_pem), pki.load_cert(cert_pem)
    except ValueError:
        raise CAError(f"{ca_dir}: {CA_KEY} or {CA_CERT} is not PEM") from None
    if not pki.key_matches_cert(key, cert):
        raise CAError(f"{ca_dir}: {CA_KEY} does not match {CA_CERT}")
    # Group access is how a Kubernetes Secret reaches a non-root user (fsGroup, mode
    # 0440); access for every user is a mistake worth a warning at each start.
    mode = stat.S_IMODE(os.stat(key_path).st_mode)
    if mode & 0o007:
        log.warning("the CA key is readable by every user",
                    extra={"path": str(key_path), "mode": oct(mode)})
    return CertificateAuthority(key, cert), False


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_directory(path.parent)
