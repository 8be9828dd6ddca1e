"""The certificate new handshakes get: loaded from the shared directory's current
generation into a new SSLContext, checked, and swapped in only if good.

The renewer switches generations atomically (patterns/security/certdir.py); the proxy polls
the `..data` link's target and, when it changes, builds a NEW context from that one
generation directory. `load_cert_chain` refuses a key that does not match the certificate;
a certificate that is not valid right now is refused here. A refused generation is counted
and logged once, and the context in use stays. Connections already open keep the context
they were made with, so a switch never breaks them.

The proxy never offers a certificate after its notAfter: `context()` returns None from
EXPIRY_GUARD seconds before it (a handshake takes a moment, and the client checks the
certificate when it arrives), so new handshakes are refused and /readyz says 503 until a
valid generation arrives.

The proxy's image has no `cryptography`: the certificate's dates, serial and names are read
with the standard library's decoder (`ssl._ssl._test_decode_cert`, the one CPython's own
tests and `ssl.get_server_certificate` users rely on; it parses the first PEM certificate
of a file, here the leaf).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from patterns.security import certdir

log = logging.getLogger(__name__)

EXPIRY_GUARD = 1.0
# A certificate directory holds a key and a short chain: anything larger is not one.
MAX_FILE_BYTES = 1024 * 1024
# TLS 1.2 suites: forward secret key exchange and AEAD only (TLS 1.3's are all of that).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class BadGeneration(Exception):
    """A generation that must not be served (its reason is the message)."""


@dataclass(frozen=True)
class Certificate:
    """What a generation's leaf certificate says (for /api/certificate and the checks)."""

    generation: str
    serial: str  # lowercase hex, no leading zeros
    not_before: float  # seconds since the epoch
    not_after: float
    dns_names: tuple[str, ...]

    def view(self) -> dict[str, object]:
        return {
            "serial": self.serial,
            "not_before": rfc3339(self.not_before),
            "not_after": rfc3339(self.not_after),
            "dns_names": list(self.dns_names),
            "generation": self.generation,
        }


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def describe(cert_path: Path, generation: str) -> Certificate:
    """The leaf's dates, serial and DNS names. Raises BadGeneration."""
    try:
        decoded = ssl._ssl._test_decode_cert(str(cert_path))  # type: ignore[attr-defined]
        return Certificate(
            generation=generation,
            serial=format(int(decoded["serialNumber"], 16), "x"),
            not_before=float(ssl.cert_time_to_seconds(decoded["notBefore"])),
            not_after=float(ssl.cert_time_to_seconds(decoded["notAfter"])),
            dns_names=tuple(v for k, v in decoded.get("subjectAltName", ()) if k == "DNS"),
        )
    except (ssl.SSLError, OSError, KeyError, ValueError) as exc:
        raise BadGeneration(f"cannot read the certificate: {exc}") from exc


def new_context(
    key_path: Path, cert_path: Path, client_ca_file: Path | None
) -> ssl.SSLContext:
    """A server context: TLS 1.2 and 1.3 only, forward secret AEAD suites, no compression
    or renegotiation, session tickets on (resumption skips the costly key exchange), and
    client certificates required and verified when `client_ca_file` is set."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    for path in (key_path, cert_path):
        if path.stat().st_size > MAX_FILE_BYTES:
            raise BadGeneration(f"{path.name} is larger than {MAX_FILE_BYTES} bytes")

    def no_password() -> bytes:  # an encrypted key is refused, never prompted for
        raise BadGeneration("the key is encrypted")

    # Raises SSLError (KEY_VALUES_MISMATCH) when the key is not the certificate's.
    context.load_cert_chain(cert_path, key_path, password=no_password)
    if client_ca_file is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=client_ca_file)
    return context


def load_generation(
    generation: certdir.Generation, client_ca_file: Path | None, now: float
) -> tuple[ssl.SSLContext, Certificate]:
    """The context and certificate of one generation, if it may be served now.
    Raises BadGeneration naming why not."""
    certificate = describe(generation.cert_path, generation.name)
    if now < certificate.not_before:
        raise BadGeneration(f"certificate {certificate.serial} is not valid before "
                            f"{rfc3339(certificate.not_before)}")
    if now >= certificate.not_after - EXPIRY_GUARD:
        raise BadGeneration(f"certificate {certificate.serial} expired at "
                            f"{rfc3339(certificate.not_after)}")
    try:
        context = new_context(generation.key_path, generation.cert_path, client_ca_file)
    except (ssl.SSLError, OSError) as exc:
        raise BadGeneration(f"cannot load key and certificate: {exc}") from exc
    return context, certificate


class CertStore:
    """The context new handshakes get, reloaded by `poll()` when the generation changes."""

    def __init__(
        self,
        cert_dir: Path,
        client_ca_file: Path | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cert_dir = cert_dir
        self.client_ca_file = client_ca_file
        self.clock = clock
        self.current: tuple[ssl.SSLContext, Certificate] | None = None
        # The generation last tried, and whether its failure was already reported.
        self._tried: str | None = None
        self._reported_expiry = False

    def poll(self) -> str | None:
        """Load the current generation if it changed (or failed before: a certificate not
        valid yet may become so). Returns "ok" or "bad" for a generation loaded or refused
        for the first time, None otherwise."""
        name = certdir.current_name(self.cert_dir)
        if name is None:
            return None
        if self.current is not None and self.current[1].generation == name:
            return None
        first_try = name != self._tried
        self._tried = name
        try:
            generation = certdir.read_generation(self.cert_dir)
            if generation.name != name:  # switched again meanwhile: the next poll loads it
                return None
            self.current = load_generation(generation, self.client_ca_file, self.clock())
        except (BadGeneration, certdir.NoGeneration) as exc:
            if first_try:
                log.warning("certificate generation refused, keeping the one in use",
                            extra={"generation": name, "reason": str(exc),
                                   "serving": self.serial()})  # fmt: skip
                return "bad"
            return None
        self._reported_expiry = False
        certificate = self.current[1]
        log.info("certificate loaded for new connections", extra=certificate.view())
        return "ok"

    def context(self) -> ssl.SSLContext | None:
        """The context for a handshake starting now; None if none may be served."""
        current = self.current
        if current is None:
            return None
        if self.clock() >= current[1].not_after - EXPIRY_GUARD:
            if not self._reported_expiry:
                self._reported_expiry = True
                log.error("certificate expired and no newer one: refusing new handshakes",
                          extra=current[1].view())  # fmt: skip
            return None
        return current[0]

    def certificate(self) -> Certificate | None:
        return self.current[1] if self.current is not None else None

    def serial(self) -> str | None:
        return self.current[1].serial if self.current is not None else None

    def ready(self) -> tuple[bool, str]:
        current = self.current
        if current is None:
            return False, f"no certificate loaded yet from {self.cert_dir}"
        if self.context() is None:
            return False, (f"certificate {current[1].serial} expired at "
                           f"{rfc3339(current[1].not_after)}; no newer one in {self.cert_dir}")
        return True, "ok"
