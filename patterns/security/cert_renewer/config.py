"""cert-renewer settings, all from environment variables (see the lab guide's table).

This module imports no `cryptography` (the entry point reports a missing `tls` extra by
name, see patterns/common/service.py)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from patterns.common.config import Env

DEFAULT_TOKEN_FILE = "/var/run/secrets/podpatterns/bootstrap-token/token"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Config:
    admin_host: str
    admin_port: int
    # https://host:port of the cert-issuer; its certificate is verified against ca_bundle
    # (hostname included).
    issuer_url: str
    issuer_host: str
    issuer_port: int
    # Read at every request, like the token: a rotated ConfigMap or Secret counts without
    # a restart.
    ca_bundle: Path
    token_file: Path
    # The certificate's names: SAN DNS names (IP addresses as such), the first is its CN.
    dns_names: tuple[str, ...]
    cert_dir: Path
    # What each certificate is asked for; the issuer refuses more than its maximum.
    lifetime_seconds: int
    # Renew once this fraction of the lifetime has passed.
    renew_fraction: float
    # Backoff after a failed renewal: a random wait in [0, min(max, min * 2^attempt)]
    # ("full jitter"), never past the current certificate's expiry.
    retry_min_seconds: float
    retry_max_seconds: float
    # /readyz is 503 when the installed certificate expires within this many seconds.
    expiry_margin_seconds: float
    # The key 0640 instead of 0600, for a proxy running as another uid of the same group.
    key_group_readable: bool
    # One request to the issuer (connect, TLS, answer).
    request_timeout_seconds: float

    def read_token(self) -> str | None:
        """The bootstrap token, re-read every time (a Secret rotates); None if unreadable."""
        try:
            token = self.token_file.read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return token or None


def load_config(environ: Mapping[str, str]) -> Config:
    env = Env(environ)
    issuer_url = env.str("RENEWER_ISSUER_URL", "https://cert-issuer:8444").rstrip("/")
    url = urlsplit(issuer_url)
    host, port = url.hostname or "", 443
    try:
        port = url.port or 443
    except ValueError:
        host = ""
    if url.scheme != "https" or not host or url.path or url.query:
        env.problems.append(
            f"RENEWER_ISSUER_URL={issuer_url!r}: expected https://host[:port] (TLS is required: "
            "the token travels in it)"
        )
    ca_bundle = Path(env.str("RENEWER_CA_BUNDLE", "/etc/issuer-ca/ca.crt"))
    if not ca_bundle.is_file():
        env.problems.append(f"RENEWER_CA_BUNDLE={str(ca_bundle)!r}: no such file")
    token_file = Path(env.str("RENEWER_TOKEN_FILE", DEFAULT_TOKEN_FILE))
    if not token_file.is_file():
        env.problems.append(f"RENEWER_TOKEN_FILE={str(token_file)!r}: no such file")
    lifetime = env.int("RENEWER_LIFETIME_SECONDS", 21600, min=1, max=366 * 86400)
    retry_min = env.float("RENEWER_RETRY_MIN_SECONDS", 1.0, min=0.01, max=3600)
    retry_max = env.float("RENEWER_RETRY_MAX_SECONDS", 60.0, min=0.01, max=86400)
    if retry_max < retry_min:
        env.problems.append("RENEWER_RETRY_MAX_SECONDS must be at least RENEWER_RETRY_MIN_SECONDS")
    config = Config(
        admin_host=env.str("RENEWER_HTTP_HOST", "0.0.0.0"),
        admin_port=env.port("RENEWER_HTTP_PORT", 9107),
        issuer_url=issuer_url,
        issuer_host=host,
        issuer_port=port,
        ca_bundle=ca_bundle,
        token_file=token_file,
        dns_names=tuple(name.lower() for name in env.list("RENEWER_DNS_NAMES", ["localhost"])),
        cert_dir=env.writable_dir("RENEWER_CERT_DIR", "/etc/tls"),
        lifetime_seconds=lifetime,
        renew_fraction=env.float("RENEWER_RENEW_FRACTION", 0.5, min=0.05, max=0.95),
        retry_min_seconds=retry_min,
        retry_max_seconds=retry_max,
        expiry_margin_seconds=env.float(
            "RENEWER_EXPIRY_MARGIN_SECONDS", lifetime * 0.1, min=0, max=366 * 86400
        ),
        key_group_readable=env.bool("RENEWER_KEY_GROUP_READABLE", False),
        request_timeout_seconds=env.float(
            "RENEWER_REQUEST_TIMEOUT_SECONDS", 10.0, min=0.1, max=300
        ),
    )
    if not config.dns_names:
        env.problems.append("RENEWER_DNS_NAMES: at least one name is needed")
    for name in config.dns_names:
        if not (_DNS_NAME.fullmatch(name) or _is_ip(name)):
            env.problems.append(f"RENEWER_DNS_NAMES item {name!r}: expected a DNS name (ASCII "
                                "letters, digits, hyphens, dots) or an IP address")
    if config.expiry_margin_seconds >= lifetime:
        env.problems.append(
            "RENEWER_EXPIRY_MARGIN_SECONDS must be less than RENEWER_LIFETIME_SECONDS"
        )
    env.check()
    return config
