"""log-collector settings, all from environment variables (see README.md)."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from patterns.common.config import Env
from patterns.common.forward.protocol import Limits


@dataclass(frozen=True)
class Config:
    admin_host: str
    admin_port: int
    forward_host: str
    forward_port: int
    data_dir: Path
    shared_key: str | None
    users: dict[str, str] = field(repr=False)
    server_hostname: str
    fsync: bool
    limits: Limits
    idle_timeout: float
    max_connections: int
    max_inflight_requests: int
    segment_bytes: int
    recent_records: int
    recent_bytes: int
    shutdown_grace: float


def _users(env: Env, name: str) -> dict[str, str]:
    users: dict[str, str] = {}
    items: list[str] = env.list(name)
    for item in items:
        user, sep, password = item.partition(":")
        if not sep or not user:
            env.problems.append(f"{name}: expected user:password[,user:password...]")
            break
        users[user] = password
    return users


def load_config(environ: Mapping[str, str]) -> Config:
    env = Env(environ)
    mib = 1024 * 1024
    shared_key = env.optional_str("COLLECTOR_SHARED_KEY")
    users = _users(env, "COLLECTOR_USERS")
    if users and shared_key is None:
        env.problems.append(
            "COLLECTOR_USERS needs COLLECTOR_SHARED_KEY (the handshake carries them)"
        )
    config = Config(
        admin_host=env.str("COLLECTOR_HTTP_HOST", "0.0.0.0"),
        admin_port=env.port("COLLECTOR_HTTP_PORT", 8081),
        forward_host=env.str("COLLECTOR_FORWARD_HOST", "0.0.0.0"),
        forward_port=env.port("COLLECTOR_FORWARD_PORT", 24224),
        data_dir=Path(env.str("COLLECTOR_DATA_DIR", "/var/lib/log-collector")),
        shared_key=shared_key,
        users=users,
        server_hostname=env.str("COLLECTOR_HOSTNAME", socket.gethostname()),
        fsync=env.bool("COLLECTOR_FSYNC", True),
        limits=Limits(
            max_frame_bytes=env.int("COLLECTOR_MAX_FRAME_BYTES", 16 * mib, min=1024),
            max_decompressed_bytes=env.int("COLLECTOR_MAX_DECOMPRESSED_BYTES", 64 * mib, min=1024),
            max_entries=env.int("COLLECTOR_MAX_ENTRIES", 100_000, min=1),
        ),
        idle_timeout=env.float("COLLECTOR_IDLE_TIMEOUT", 600.0, min=0.1),
        max_connections=env.int("COLLECTOR_MAX_CONNECTIONS", 256, min=1),
        max_inflight_requests=env.int("COLLECTOR_MAX_INFLIGHT_REQUESTS", 8, min=1, max=1024),
        segment_bytes=env.int("COLLECTOR_SEGMENT_BYTES", 64 * mib, min=4096),
        recent_records=env.int("COLLECTOR_RECENT_RECORDS", 1000, min=1, max=100_000),
        recent_bytes=env.int("COLLECTOR_RECENT_BYTES", 8 * mib, min=64 * 1024),
        shutdown_grace=env.float("COLLECTOR_SHUTDOWN_GRACE", 10.0, min=0.0),
    )
    env.check()
    return config
