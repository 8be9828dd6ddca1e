"""log-shipper settings, all from environment variables (see README.md)."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from patterns.common.config import Env
from patterns.common.follower import Limits
from patterns.common.forward.settings import ForwardSettings, forward_settings

# Old name -> new name: the old one still works (with a warning) until the next major
# version. A Forward client's settings are named alike in every service that forwards.
RENAMED = {
    "SHIPPER_TAG": "FLUENT_TAG",
    "SHIPPER_SHARED_KEY": "FLUENT_SHARED_KEY",
    "SHIPPER_POLL_INTERVAL": "SHIPPER_POLL_SECONDS",
    "SHIPPER_RESCAN_INTERVAL": "SHIPPER_RESCAN_SECONDS",
}

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class Config:
    admin_host: str
    admin_port: int
    paths: list[str]
    state_dir: Path
    forward: ForwardSettings  # FLUENT_HOST, FLUENT_PORT, FLUENT_TAG, FLUENT_SHARED_KEY
    self_hostname: str
    compress: bool
    batch_bytes: int
    connect_timeout: float
    ack_timeout: float
    retry_min: float
    retry_max: float
    shutdown_timeout: float
    checkpoint_fsync: bool
    limits: Limits


def load_config(environ: Mapping[str, str]) -> Config:
    env = Env(environ, renamed=RENAMED)
    retry_min = env.float("SHIPPER_RETRY_MIN", 0.2, min=0.01, max=60)
    config = Config(
        admin_host=env.str("SHIPPER_HTTP_HOST", "0.0.0.0"),
        admin_port=env.port("SHIPPER_HTTP_PORT", 9102),
        paths=env.list("SHIPPER_PATHS", required=True),
        state_dir=env.writable_dir("SHIPPER_STATE_DIR", "/var/lib/log-shipper"),
        forward=forward_settings(env, default_tag="app.logs"),
        self_hostname=env.str("SHIPPER_HOSTNAME", socket.gethostname()),
        compress=env.bool("SHIPPER_COMPRESS", False),
        batch_bytes=env.int("SHIPPER_BATCH_BYTES", 512 * KIB, min=4 * KIB, max=1 * MIB),
        connect_timeout=env.float("SHIPPER_CONNECT_TIMEOUT", 5.0, min=0.1, max=300),
        ack_timeout=env.float("SHIPPER_ACK_TIMEOUT", 10.0, min=0.1, max=600),
        retry_min=retry_min,
        retry_max=env.float("SHIPPER_RETRY_MAX", 10.0, min=retry_min, max=600),
        shutdown_timeout=env.float("SHIPPER_SHUTDOWN_TIMEOUT", 20.0, min=0, max=3600),
        checkpoint_fsync=env.bool("SHIPPER_CHECKPOINT_FSYNC", True),
        limits=Limits(
            # At most 256 KiB, so one piece always fits in a request (encode.py: 1 MiB of
            # entries), even if invalid UTF-8 makes every byte a 3-byte U+FFFD.
            max_line_bytes=env.int("SHIPPER_MAX_LINE_BYTES", 64 * KIB, min=64, max=256 * KIB),
            truncate_long_lines=env.choice("SHIPPER_LONG_LINES", "split", ("split", "truncate"))
            == "truncate",
            rotate_wait=env.float("SHIPPER_ROTATE_WAIT", 5.0, min=0, max=3600),
            fingerprint_bytes=env.int("SHIPPER_FINGERPRINT_BYTES", 1024, min=16, max=64 * KIB),
            poll_interval=env.float("SHIPPER_POLL_SECONDS", 0.25, min=0.01, max=60),
            rescan_interval=env.float("SHIPPER_RESCAN_SECONDS", 2.0, min=0.05, max=3600),
            use_inotify=env.bool("SHIPPER_INOTIFY", True),
            follow_symlinks=env.bool("SHIPPER_FOLLOW_SYMLINKS", False),
            max_files=env.int("SHIPPER_MAX_FILES", 256, min=1, max=1_000_000),
        ),
    )
    env.check()
    return config
