"""tls-proxy settings, all from environment variables (see the security lab guide's table)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from patterns.common.config import Env, event_loop


@dataclass(frozen=True)
class Config:
    admin_host: str
    admin_port: int
    listen_host: str
    listen_port: int
    upstream_host: str
    upstream_port: int
    cert_dir: Path
    # None: no mutual TLS. Set: every client must present a certificate issued by it.
    client_ca_file: Path | None
    # Processes accepting on the same port (SO_REUSEPORT), each with its own event loop.
    workers: int
    reload_seconds: float
    # Per worker: past it, the connection that has been quiet longest (a stalled
    # handshake, an idle keep-alive, a silent peer) is closed to make room.
    max_connections: int
    handshake_timeout: float
    # From a request head's first byte to its blank line, however slowly it trickles in.
    header_timeout: float
    # No byte in either direction for this long: the connection is closed.
    idle_timeout: float
    max_header_bytes: int
    max_headers: int
    connect_timeout: float
    drain_timeout: float
    event_loop: str


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 quota
    (`cpu.max`, what a container's CPU limit becomes)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, _, period = Path("/sys/fs/cgroup/cpu.max").read_text().partition(" ")
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def load_config(environ: Mapping[str, str]) -> Config:
    env = Env(environ)
    listen_host, listen_port = env.host_port("PROXY_LISTEN", "0.0.0.0:8443")
    upstream_host, upstream_port = env.host_port("PROXY_UPSTREAM", "127.0.0.1:8080")
    client_ca = env.optional_str("PROXY_CLIENT_CA_FILE")
    if client_ca is not None and not Path(client_ca).is_file():
        env.problems.append(f"PROXY_CLIENT_CA_FILE={client_ca!r}: no such file")
    config = Config(
        admin_host=env.str("PROXY_HTTP_HOST", "0.0.0.0"),
        admin_port=env.port("PROXY_HTTP_PORT", 9108),
        listen_host=listen_host,
        listen_port=listen_port,
        upstream_host=upstream_host,
        upstream_port=upstream_port,
        cert_dir=Path(env.str("PROXY_CERT_DIR", "/etc/tls")),
        client_ca_file=Path(client_ca) if client_ca is not None else None,
        workers=env.int("PROXY_WORKERS", available_cpus(), min=1, max=256),
        reload_seconds=env.float("PROXY_RELOAD_SECONDS", 1.0, min=0.05, max=3600),
        max_connections=env.int("PROXY_MAX_CONNECTIONS", 1024, min=1, max=1_000_000),
        handshake_timeout=env.float("PROXY_HANDSHAKE_TIMEOUT_SECONDS", 5.0, min=0.1, max=300),
        header_timeout=env.float("PROXY_HEADER_TIMEOUT_SECONDS", 10.0, min=0.1, max=300),
        idle_timeout=env.float("PROXY_IDLE_TIMEOUT_SECONDS", 60.0, min=0.1, max=86400),
        max_header_bytes=env.int("PROXY_MAX_HEADER_BYTES", 32 * 1024, min=1024, max=1024 * 1024),
        max_headers=env.int("PROXY_MAX_HEADERS", 100, min=1, max=10_000),
        connect_timeout=env.float("PROXY_CONNECT_TIMEOUT_SECONDS", 5.0, min=0.1, max=300),
        drain_timeout=env.float("PROXY_DRAIN_SECONDS", 10.0, min=0, max=3600),
        event_loop=event_loop(env, "PROXY_EVENT_LOOP"),
    )
    env.check()
    return config
