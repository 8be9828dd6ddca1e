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
    shared_key: str | None = field(repr=False)
    users: dict[str, str] = field(repr=False)
    server_hostname: str
    fsync: bool
    limits: Limits
    idle_timeout: float
    handshake_timeout: float
    frame_timeout: float
    max_connections: int
    max_buffered_bytes: int
    max_inflight_requests: int
    segment_bytes: int
    retention_bytes: int
    retention_seconds: float
    max_tags: int
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


def max_stored_request_bytes(limits: Limits) -> int:
    """The most one request may take as JSON lines in the data files: 4 times its
    largest decoded form. A shipper's request (1 MiB of entries) takes ~1.3 to 3 MiB;
    control characters are escaped to 6 bytes each."""
    return 4 * max(limits.max_frame_bytes, limits.max_decompressed_bytes)


def load_config(environ: Mapping[str, str]) -> Config:
    env = Env(environ)
    mib = 1024 * 1024
    shared_key = env.optional_str("COLLECTOR_SHARED_KEY")
    users = _users(env, "COLLECTOR_USERS")
    if users and shared_key is None:
        env.problems.append(
            "COLLECTOR_USERS needs COLLECTOR_SHARED_KEY (the handshake carries them)"
        )
    # The defaults fit the pod of k8s/sidecar/base/log-collector.yaml (256Mi of memory,
    # a 1Gi data volume); README.md has the sums.
    config = Config(
        admin_host=env.str("COLLECTOR_HTTP_HOST", "0.0.0.0"),
        admin_port=env.port("COLLECTOR_HTTP_PORT", 8081),
        forward_host=env.str("COLLECTOR_FORWARD_HOST", "0.0.0.0"),
        forward_port=env.port("COLLECTOR_FORWARD_PORT", 24224),
        data_dir=env.writable_dir("COLLECTOR_DATA_DIR", "/var/lib/log-collector"),
        shared_key=shared_key,
        users=users,
        server_hostname=env.str("COLLECTOR_HOSTNAME", socket.gethostname()),
        fsync=env.bool("COLLECTOR_FSYNC", True),
        limits=Limits(
            max_frame_bytes=env.int("COLLECTOR_MAX_FRAME_BYTES", 2 * mib, min=1024),
            max_decompressed_bytes=env.int("COLLECTOR_MAX_DECOMPRESSED_BYTES", 2 * mib, min=1024),
            max_entries=env.int("COLLECTOR_MAX_ENTRIES", 100_000, min=1),
            max_values=env.int("COLLECTOR_MAX_VALUES", 400_000, min=16),
        ),
        idle_timeout=env.float("COLLECTOR_IDLE_TIMEOUT", 600.0, min=0.1),
        handshake_timeout=env.float("COLLECTOR_HANDSHAKE_TIMEOUT", 10.0, min=0.1),
        frame_timeout=env.float("COLLECTOR_FRAME_TIMEOUT", 10.0, min=0.1),
        max_connections=env.int("COLLECTOR_MAX_CONNECTIONS", 64, min=1),
        max_buffered_bytes=env.int("COLLECTOR_MAX_BUFFERED_BYTES", 16 * mib, min=1024),
        max_inflight_requests=env.int("COLLECTOR_MAX_INFLIGHT_REQUESTS", 2, min=1, max=1024),
        segment_bytes=env.int("COLLECTOR_SEGMENT_BYTES", 16 * mib, min=4096),
        retention_bytes=env.int("COLLECTOR_RETENTION_BYTES", 768 * mib, min=0),
        retention_seconds=env.float("COLLECTOR_RETENTION_SECONDS", 7 * 86400.0, min=0.0),
        max_tags=env.int("COLLECTOR_MAX_TAGS", 1000, min=1, max=1_000_000),
        recent_records=env.int("COLLECTOR_RECENT_RECORDS", 1000, min=1, max=100_000),
        recent_bytes=env.int("COLLECTOR_RECENT_BYTES", 8 * mib, min=64 * 1024),
        shutdown_grace=env.float("COLLECTOR_SHUTDOWN_GRACE", 10.0, min=0.0),
    )
    if config.max_buffered_bytes < config.limits.max_frame_bytes:
        env.problems.append(
            "COLLECTOR_MAX_BUFFERED_BYTES must be at least COLLECTOR_MAX_FRAME_BYTES "
            "(one whole request)"
        )
    # Retention drops whole closed segments before each write, so the store stays under
    # it if it holds two segments and what one write can add (every request in flight).
    least = 2 * config.segment_bytes + config.max_inflight_requests * max_stored_request_bytes(
        config.limits
    )
    if config.retention_bytes and config.retention_bytes < least:
        env.problems.append(
            f"COLLECTOR_RETENTION_BYTES must be 0 (no limit) or at least {least}: twice "
            "COLLECTOR_SEGMENT_BYTES plus what COLLECTOR_MAX_INFLIGHT_REQUESTS requests "
            "write at once (4 x the larger of COLLECTOR_MAX_FRAME_BYTES and "
            "COLLECTOR_MAX_DECOMPRESSED_BYTES each)"
        )
    env.check()
    return config
