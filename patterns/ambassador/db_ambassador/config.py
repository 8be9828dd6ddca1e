"""db-ambassador settings, all from environment variables (see the lab guide's table)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from patterns.common.config import Env, event_loop, parse_host_port

from .routes import ROUTES

TLS_MODES = ("disable", "require", "verify-full")


@dataclass(frozen=True)
class Config:
    admin_host: str
    admin_port: int
    listen_host: str
    listen_port: int
    # host:port in priority order: the first healthy (writable, with health credentials)
    # one gets new sessions.
    upstreams: tuple[tuple[str, int], ...]
    tls_mode: str
    tls_ca_file: str | None
    max_connections: int
    # CancelRequests passed on per session per second (a burst of as many, at least one).
    cancel_rate: float
    connect_timeout: float
    # 0 disables it: pooled connections may legitimately sit idle for long.
    idle_timeout: float
    drain_timeout: float
    health_interval: float
    health_timeout: float
    # Consecutive check timeouts before an upstream counts as down.
    health_timeouts_allowed: int
    health_user: str | None
    health_password_value: str | None
    # Read at every check, so a rotated Secret is picked up without a restart.
    health_password_file: str | None
    health_database: str
    # The routing rule (routes/ROUTES) that picks a new session's upstreams.
    route: str
    event_loop: str

    def health_password(self) -> str:
        """The file wins over the variable; an unreadable file reads as no password (the
        check then fails with the server's own authentication error)."""
        if self.health_password_file is not None:
            try:
                return Path(self.health_password_file).read_text().rstrip("\r\n")
            except OSError:
                return ""
        return self.health_password_value or ""

    @property
    def checks_role(self) -> bool:
        """With credentials the checks log in and ask pg_is_in_recovery()."""
        return self.health_user is not None


# Old name -> new name: the old one still works (with a warning) until the next major
# version. An interval between polls is `*_POLL_SECONDS` in every service.
RENAMED = {"AMBASSADOR_HEALTH_INTERVAL": "AMBASSADOR_HEALTH_POLL_SECONDS"}


def load_config(environ: Mapping[str, str]) -> Config:
    env = Env(environ, renamed=RENAMED)
    listen_host, listen_port = env.host_port("AMBASSADOR_LISTEN", "127.0.0.1:5432")
    upstreams: list[tuple[str, int]] = []
    for item in env.list("AMBASSADOR_UPSTREAMS", required=True):
        parsed = parse_host_port(item)
        if parsed is None:
            env.problems.append(f"AMBASSADOR_UPSTREAMS item {item!r}: expected host:port")
        else:
            upstreams.append(parsed)
    tls_mode = env.choice("AMBASSADOR_TLS_MODE", "disable", TLS_MODES)
    tls_ca_file = env.optional_str("AMBASSADOR_TLS_CA_FILE")
    if tls_mode == "verify-full" and tls_ca_file is None:
        env.problems.append(
            "AMBASSADOR_TLS_CA_FILE is required with AMBASSADOR_TLS_MODE=verify-full"
        )
    if tls_ca_file is not None and not Path(tls_ca_file).is_file():
        env.problems.append(f"AMBASSADOR_TLS_CA_FILE={tls_ca_file!r}: no such file")
    health_user = env.optional_str("AMBASSADOR_HEALTH_USER")
    health_password = env.optional_str("AMBASSADOR_HEALTH_PASSWORD")
    password_file = env.optional_str("AMBASSADOR_HEALTH_PASSWORD_FILE")
    if password_file is not None:
        try:
            Path(password_file).read_text()
        except OSError as exc:
            env.problems.append(
                f"AMBASSADOR_HEALTH_PASSWORD_FILE={password_file!r}: {exc.strerror}"
            )
    health_interval = env.float("AMBASSADOR_HEALTH_POLL_SECONDS", 2.0, min=0.1, max=3600)
    config = Config(
        admin_host=env.str("AMBASSADOR_HTTP_HOST", "0.0.0.0"),
        admin_port=env.port("AMBASSADOR_HTTP_PORT", 9104),
        listen_host=listen_host,
        listen_port=listen_port,
        upstreams=tuple(upstreams),
        tls_mode=tls_mode,
        tls_ca_file=tls_ca_file,
        max_connections=env.int("AMBASSADOR_MAX_CONNECTIONS", 100, min=1, max=100_000),
        cancel_rate=env.float("AMBASSADOR_CANCEL_RATE", 10.0, min=0.01, max=10_000),
        connect_timeout=env.float("AMBASSADOR_CONNECT_TIMEOUT", 5.0, min=0.1, max=300),
        idle_timeout=env.float("AMBASSADOR_IDLE_TIMEOUT", 0.0, min=0, max=86400 * 7),
        drain_timeout=env.float("AMBASSADOR_DRAIN_TIMEOUT", 30.0, min=0, max=3600),
        health_interval=health_interval,
        health_timeout=env.float(
            "AMBASSADOR_HEALTH_TIMEOUT", min(2.0, health_interval), min=0.1, max=300
        ),
        health_timeouts_allowed=env.int("AMBASSADOR_HEALTH_TIMEOUTS", 3, min=1, max=100),
        health_user=health_user,
        health_password_value=health_password,
        health_password_file=password_file,
        health_database=env.str("AMBASSADOR_HEALTH_DATABASE", "postgres"),
        route=env.choice("AMBASSADOR_ROUTE", "priority", tuple(ROUTES)),
        event_loop=event_loop(env, "AMBASSADOR_EVENT_LOOP"),
    )
    env.check()
    return config
