"""What the issuer signs: the token, the request's form, its names and its lifetime.

Each refusal is a `Refusal`: an HTTP status, the metric's result label and one sentence
for the caller (the API answers `{"error": sentence}`). Nothing here logs, and no
sentence repeats the token."""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from patterns.security import pki

from .config import DNS_NAME

MAX_NAMES = 20


class Refusal(Exception):
    def __init__(self, status: int, result: str, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.result = result
        self.error = error


@dataclass(frozen=True)
class SigningRequest:
    csr: x509.CertificateSigningRequest
    names: tuple[str, ...]
    lifetime_seconds: int


def authorize(authorization: str | None, token: bytes) -> None:
    """`Authorization: Bearer <token>`, compared in constant time."""
    if not token:
        raise Refusal(401, "unauthorized", "the issuer has no token configured to compare with")
    if authorization is None:
        raise Refusal(401, "unauthorized", "missing Authorization: Bearer <token> header")
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Refusal(401, "unauthorized", "the Authorization header must be Bearer <token>")
    if not hmac.compare_digest(presented.strip().encode("utf-8", "surrogateescape"), token):
        raise Refusal(401, "unauthorized", "wrong token")


def name_allowed(name: str, allowed: Sequence[str]) -> bool:
    """`name` is one of `allowed`, or matches a "*.suffix" entry with exactly one label."""
    name = name.lower()
    for pattern in allowed:
        if pattern.startswith("*."):
            label, dot, rest = name.partition(".")
            if dot and label and rest == pattern[2:]:
                return True
        elif name == pattern:
            return True
    return False


def _valid_name(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return DNS_NAME.fullmatch(name) is not None


def parse(body: bytes, max_lifetime: int, allowed: Sequence[str]) -> SigningRequest:
    """The JSON body `{"csr": PEM, "lifetime_seconds": int (optional)}` checked in full."""
    try:
        document: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refusal(400, "bad_request", "the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise Refusal(400, "bad_request", 'the body must be a JSON object {"csr": ...}')
    csr_pem = document.get("csr")
    if not isinstance(csr_pem, str) or not csr_pem.strip():
        raise Refusal(400, "bad_request", '"csr" must be a PEM certificate request (a string)')
    lifetime = document.get("lifetime_seconds", max_lifetime)
    if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime < 1:
        raise Refusal(400, "bad_request", '"lifetime_seconds" must be a positive integer')
    if lifetime > max_lifetime:
        raise Refusal(
            422,
            "lifetime_too_long",
            f"lifetime_seconds {lifetime} is over the maximum of {max_lifetime}",
        )
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode("utf-8", "surrogateescape"))
    except ValueError:
        raise Refusal(
            400, "bad_request", '"csr" is not a PEM PKCS#10 certificate request'
        ) from None
    try:
        signature_ok = csr.is_signature_valid
        public_key = csr.public_key()
    except (ValueError, TypeError, x509.UnsupportedGeneralNameType):
        raise Refusal(422, "invalid_csr", "the request's key or signature cannot be read") from None
    if not signature_ok:
        raise Refusal(422, "invalid_csr", "the request's signature does not verify")
    why = pki.check_public_key(public_key)
    if why is not None:
        raise Refusal(422, "invalid_csr", why)
    try:
        names = [name.lower() for name in pki.csr_names(csr)]
    except ValueError as exc:
        raise Refusal(422, "invalid_csr", str(exc)) from None
    except Exception:  # an extension cryptography cannot decode
        raise Refusal(422, "invalid_csr", "the request's extensions cannot be read") from None
    if not names:
        raise Refusal(422, "invalid_csr", "the request names no DNS name (subjectAltName)")
    if len(names) > MAX_NAMES:
        raise Refusal(422, "invalid_csr", f"the request names more than {MAX_NAMES} names")
    for name in names:
        shown = name[:100]
        if not _valid_name(name):
            raise Refusal(422, "invalid_csr", f"{shown!r} is not a valid DNS name")
        if not name_allowed(name, allowed):
            raise Refusal(403, "forbidden_name", f"the issuer does not allow the name {shown!r}")
    return SigningRequest(csr=csr, names=tuple(names), lifetime_seconds=lifetime)
