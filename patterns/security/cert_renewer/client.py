"""One request to the cert-issuer: a fresh key, its request, the signed certificate checked.

The issuer is verified against RENEWER_CA_BUNDLE (hostname included) with the standard
library's default client context, so the bootstrap token only ever goes to it. Every
failure is a `RenewalFailed` with the metric's result label and a sentence for the log
(the issuer's own, when it refused); none of them carries the key or the token."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from patterns.security import pki

from .config import Config

MAX_RESPONSE_BYTES = 256 * 1024
PATH = "/v1/certificates"


class RenewalFailed(Exception):
    def __init__(self, result: str, error: str) -> None:
        super().__init__(error)
        self.result = result
        self.error = error


@dataclass(frozen=True)
class Signed:
    key_pem: bytes
    chain_pem: bytes  # the leaf, then the issuing CA
    ca_pem: bytes
    cert: x509.Certificate
    info: pki.CertInfo


def request_certificate(config: Config) -> Signed:
    token = config.read_token()
    if token is None:
        raise RenewalFailed("no_token", f"cannot read a token from {config.token_file}")
    try:
        context = ssl.create_default_context(cafile=str(config.ca_bundle))
    except (OSError, ssl.SSLError) as exc:
        raise RenewalFailed(
            "issuer_unreachable", f"cannot load the CA bundle {config.ca_bundle}: {exc}"
        ) from None
    key = pki.generate_key()
    body = json.dumps({
        "csr": pki.build_csr(key, config.dns_names).decode(),
        "lifetime_seconds": config.lifetime_seconds,
    }).encode()
    connection = http.client.HTTPSConnection(
        config.issuer_host, config.issuer_port, context=context,
        timeout=config.request_timeout_seconds,
    )
    try:
        connection.request("POST", PATH, body=body, headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Connection": "close",
        })
        response = connection.getresponse()
        status = response.status
        payload = response.read(MAX_RESPONSE_BYTES + 1)
    except ssl.SSLCertVerificationError as exc:
        raise RenewalFailed(
            "issuer_unreachable", f"the issuer's certificate does not verify: {exc.verify_message}"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise RenewalFailed(
            "issuer_unreachable", f"{config.issuer_url}: {_describe(exc)}"
        ) from None
    finally:
        connection.close()
    if len(payload) > MAX_RESPONSE_BYTES:
        raise RenewalFailed(
            "issuer_error", f"the issuer's answer is over {MAX_RESPONSE_BYTES} bytes"
        )
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        document = None
    if status != 201:
        error = document.get("error") if isinstance(document, dict) else None
        sentence = str(error)[:500] if error else f"HTTP {status} without an error message"
        result = "refused" if 400 <= status < 500 else "issuer_error"
        raise RenewalFailed(result, f"the issuer answered {status}: {sentence}")
    if not isinstance(document, dict) or not all(
        isinstance(document.get(field), str) for field in ("certificate", "ca")
    ):
        raise RenewalFailed("issuer_error", "the issuer's answer has no certificate and ca")
    return _checked(key, document["certificate"].encode(), document["ca"].encode(), config)


def _checked(key: pki.PrivateKey, cert_pem: bytes, ca_pem: bytes, config: Config) -> Signed:
    """The certificate is for our key and names, and signed by the CA that came with it."""
    try:
        cert = pki.load_cert(cert_pem)
        ca = pki.load_cert(ca_pem)
    except ValueError:
        raise RenewalFailed(
            "bad_certificate", "the issuer's answer is not PEM certificates"
        ) from None
    if not pki.key_matches_cert(key, cert):
        raise RenewalFailed("bad_certificate", "the certificate is not for the key we sent")
    info = pki.CertInfo.of(cert)
    if set(info.dns_names) != set(config.dns_names):
        raise RenewalFailed(
            "bad_certificate", f"the certificate names {list(info.dns_names)}, "
            f"not {list(config.dns_names)}"
        )
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        raise RenewalFailed("bad_certificate", "the certificate is not signed by its CA") from None
    if info.seconds_left() <= 0:
        raise RenewalFailed("bad_certificate", "the certificate has already expired")
    clean_cert, clean_ca = pki.cert_to_pem(cert), pki.cert_to_pem(ca)
    return Signed(
        key_pem=pki.key_to_pem(key),
        chain_pem=clean_cert + clean_ca,
        ca_pem=clean_ca,
        cert=cert,
        info=info,
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "no answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the issuer's name ({exc.strerror})"
    return str(exc) or type(exc).__name__
