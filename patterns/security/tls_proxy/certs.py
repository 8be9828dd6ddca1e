"""The certificate new handshakes get: loaded from the shared directory's current
generation into a new SSLContext, checked, and swapped in only if good.

The renewer switches generations atomically (patterns/security/certdir.py); the proxy polls
the `..data` link's target and, when it changes, builds a NEW context from that one
generation directory. A refused generation is counted and logged once, and the context in
use stays. Connections already open keep the context they were made with, so a switch
never breaks them.

A generation is checked as a client would check it: the new context serves one handshake
in memory (two `ssl.SSLObject`s over `MemoryBIO`s, nothing on the network) to a client that
trusts only the generation's own `ca.crt` (the CA the renewer got the certificate from).
What that client verified is what is served: the chain to ca.crt, the key (the server
signs the handshake with it; `load_cert_chain` refuses a key that is not the
certificate's), the purpose (server authentication); its `getpeercert()` gives the dates,
serial and names of exactly the leaf the context offers. A generation without a readable
ca.crt, or whose certificate does not verify against it, is refused: every client that
trusts the CA would refuse it too, while the one in use still works until it expires. The
dates are judged here, by the store's clock (the one readiness uses): a certificate not
valid yet, or within EXPIRY_GUARD of its notAfter, is refused. (The proxy's image has no
`cryptography`; this needs only the standard library's public API.)

The proxy never offers a certificate after its notAfter: `context()` returns None from
EXPIRY_GUARD seconds before it (a handshake takes a moment, and the client checks the
certificate when it arrives), so new handshakes are refused and /readyz says 503 until a
valid generation arrives.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from patterns.security import certdir

log = logging.getLogger(__name__)

EXPIRY_GUARD = 1.0
# A certificate directory holds a key and a short chain: anything larger is not one.
MAX_FILE_BYTES = 1024 * 1024
# TLS 1.2 suites: forward secret key exchange and AEAD only (TLS 1.3's are all of that).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
# OpenSSL's X509_V_FLAG_NO_CHECK_TIME (x509_vfy.h; the ssl module has no name for it): the
# in-memory check leaves the dates to this module's clock.
NO_CHECK_TIME = ssl.VerifyFlags(0x200000)
# Flights of the in-memory handshake: the client has its answer after two.
HANDSHAKE_ROUNDS = 4


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

    @classmethod
    def of(cls, peer: dict[str, Any], generation: str) -> Certificate:
        """From `getpeercert()` of a verified peer. Raises BadGeneration."""
        try:
            return cls(
                generation=generation,
                serial=format(int(peer["serialNumber"], 16), "x"),
                not_before=float(ssl.cert_time_to_seconds(peer["notBefore"])),
                not_after=float(ssl.cert_time_to_seconds(peer["notAfter"])),
                dns_names=tuple(v for k, v in peer.get("subjectAltName", ()) if k == "DNS"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadGeneration(f"cannot read the certificate's dates and serial: {exc}") from exc

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


def _check_sizes(*paths: Path) -> None:
    for path in paths:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise BadGeneration(f"{path.name} is larger than {MAX_FILE_BYTES} bytes")


def new_context(key_path: Path, cert_path: Path) -> ssl.SSLContext:
    """A server context: TLS 1.2 and 1.3 only, forward secret AEAD suites, no compression
    or renegotiation, session tickets on (resumption skips the costly key exchange).
    Raises SSLError (KEY_VALUES_MISMATCH: the key is not the certificate's) or OSError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION

    def no_password() -> bytes:  # an encrypted key is refused, never prompted for
        raise BadGeneration("the key is encrypted")

    context.load_cert_chain(cert_path, key_path, password=no_password)
    return context


def served_certificate(context: ssl.SSLContext, ca_path: Path) -> dict[str, Any]:
    """`getpeercert()` of a client that completed a handshake with `context` in memory,
    trusting only `ca_path` (no host name check: the names are reported, not chosen here;
    no date check: the caller's clock judges them). Raises SSLCertVerificationError when
    the chain does not verify, SSLError or OSError when ca_path cannot be loaded."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED
    client.check_hostname = False
    client.verify_flags |= NO_CHECK_TIME
    client.load_verify_locations(cafile=ca_path)
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(to_client, to_server)
    server_side = context.wrap_bio(to_server, to_client, server_side=True)
    for _ in range(HANDSHAKE_ROUNDS):
        try:
            client_side.do_handshake()
            return client_side.getpeercert() or {}
        except ssl.SSLWantReadError:
            pass
        with contextlib.suppress(ssl.SSLWantReadError):
            server_side.do_handshake()
    raise BadGeneration(f"no handshake with itself in {HANDSHAKE_ROUNDS} rounds")


def load_generation(
    generation: certdir.Generation, client_ca_file: Path | None, now: float
) -> tuple[ssl.SSLContext, Certificate]:
    """The context and certificate of one generation, if it may be served now: client
    certificates required and verified against `client_ca_file` when it is set. Raises
    BadGeneration naming why not."""
    key_path, cert_path, ca_path = generation
    try:
        _check_sizes(key_path, cert_path)
        context = new_context(key_path, cert_path)
    except (ssl.SSLError, OSError) as exc:
        raise BadGeneration(f"cannot load key and certificate: {exc}") from exc
    try:
        _check_sizes(ca_path)
        peer = served_certificate(context, ca_path)
    except ssl.SSLCertVerificationError as exc:
        raise BadGeneration(f"{cert_path.name} does not verify against {ca_path.name}: "
                            f"{exc.verify_message}") from exc
    except (ssl.SSLError, OSError) as exc:
        raise BadGeneration(f"cannot check {cert_path.name} against {ca_path.name}: "
                            f"{exc}") from exc
    certificate = Certificate.of(peer, generation.name)
    if now < certificate.not_before:
        raise BadGeneration(f"certificate {certificate.serial} is not valid before "
                            f"{rfc3339(certificate.not_before)}")
    if now >= certificate.not_after - EXPIRY_GUARD:
        raise BadGeneration(f"certificate {certificate.serial} expired at "
                            f"{rfc3339(certificate.not_after)}")
    if client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise BadGeneration(f"cannot load the client CA {client_ca_file}: {exc}") from exc
        context.verify_mode = ssl.CERT_REQUIRED
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
