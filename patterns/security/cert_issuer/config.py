"""cert-issuer settings, all from environment variables (see the lab guide's table).

This module imports no `cryptography` (the entry point reports a missing `tls` extra by
name, see patterns/common/service.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from patterns.common.config import Env

DEFAULT_TOKEN_FILE = "/var/run/secrets/podpatterns/bootstrap-token/token"
DEFAULT_ALLOWED_NAMES = [
    "localhost",
    "secure-app",
    "*.podpatterns-security.svc",
    "*.podpatterns-security.svc.cluster.local",
]
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# A DNS name the issuer puts in a certificate: lowercase labels of letters, digits and
# inner hyphens, 253 characters at most (no wildcards: a certificate is for named hosts).
DNS_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
# An allowed-names entry: a DNS name, "*." and a DNS name (one label), or an IP address.
_PATTERN = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
_IP = re.compile(r"[0-9.]+|[0-9a-f:]+")


@dataclass(frozen=True)
class Config:
    admin_host: str
    admin_port: int
    listen_host: str
    listen_port: int
    # ca.key (mode 0600) and ca.crt; both are made on first start when the directory is
    # empty or missing.
    ca_dir: Path
    # The bootstrap token (a Secret): read at every request, so a rotated Secret counts
    # without a restart.
    token_file: Path
    # A request may ask for less; it gets this much when it names no lifetime.
    max_lifetime_seconds: int
    # DNS names (case-insensitive), "*.suffix" for exactly one label before suffix, and IP
    # addresses, compared as text.
    allowed_names: tuple[str, ...]
    # The issuer's own serving certificate (issued from its CA at start, in memory only).
    server_names: tuple[str, ...]

    def read_token(self) -> bytes:
        """The token's bytes without the trailing newline; b"" if unreadable (then every
        request is refused as unauthorized)."""
        try:
            return self.token_file.read_bytes().rstrip(b"\r\n")
        except OSError:
            return b""


def load_ca_dir(environ: Mapping[str, str]) -> Path:
    """ISSUER_CA_DIR alone: all `cert-issuer init-ca` needs."""
    env = Env(environ)
    ca_dir = Path(env.str("ISSUER_CA_DIR", "/var/lib/cert-issuer"))
    env.check()
    return ca_dir


def load_config(environ: Mapping[str, str]) -> Config:
    env = Env(environ)
    listen_host, listen_port = env.host_port("ISSUER_LISTEN", "0.0.0.0:8444")
    token_file = Path(env.str("ISSUER_TOKEN_FILE", DEFAULT_TOKEN_FILE))
    try:
        if not token_file.read_bytes().strip():
            env.problems.append(f"ISSUER_TOKEN_FILE={str(token_file)!r}: the token is empty")
    except OSError as exc:
        env.problems.append(f"ISSUER_TOKEN_FILE={str(token_file)!r}: {exc.strerror}")
    allowed = [name.lower() for name in env.list("ISSUER_ALLOWED_NAMES", DEFAULT_ALLOWED_NAMES)]
    for name in allowed:
        if not (_PATTERN.fullmatch(name) or _IP.fullmatch(name)):
            env.problems.append(
                f"ISSUER_ALLOWED_NAMES item {name!r}: expected a DNS name, *.<DNS name> "
                "or an IP address"
            )
    server_names = env.list("ISSUER_SERVER_NAMES", ["cert-issuer", "localhost"])
    if not server_names:
        env.problems.append("ISSUER_SERVER_NAMES: at least one name is needed")
    for name in server_names:
        if not (DNS_NAME.fullmatch(name.lower()) or _IP.fullmatch(name)):
            env.problems.append(f"ISSUER_SERVER_NAMES item {name!r}: expected a DNS name "
                                "or an IP address")
    config = Config(
        admin_host=env.str("ISSUER_HTTP_HOST", "0.0.0.0"),
        admin_port=env.port("ISSUER_HTTP_PORT", 9106),
        listen_host=listen_host,
        listen_port=listen_port,
        ca_dir=Path(env.str("ISSUER_CA_DIR", "/var/lib/cert-issuer")),
        token_file=token_file,
        max_lifetime_seconds=env.int(
            "ISSUER_MAX_LIFETIME_SECONDS", 86400, min=1, max=366 * 86400
        ),
        allowed_names=tuple(allowed),
        server_names=tuple(server_names),
    )
    env.check()
    return config
