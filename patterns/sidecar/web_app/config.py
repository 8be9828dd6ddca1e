"""The web-app's settings, all from environment variables (see the sidecar lab guide)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from patterns.common.config import Env

ACCESS_LOG_NAME = "access.log"


@dataclass(frozen=True)
class Config:
    host: str
    port: int
    log_dir: Path
    # Small by default so that a minute of demo traffic shows several rotations.
    log_max_bytes: int
    log_backups: int
    threads: int
    graceful_timeout: int
    # Upper bound of /traffic?n=: one request must not be able to outrun the shipper by
    # more than the rotated files kept on disk (log_backups * log_max_bytes).
    traffic_max: int

    @property
    def access_log_path(self) -> Path:
        return self.log_dir / ACCESS_LOG_NAME


def load_config(environ: Mapping[str, str]) -> Config:
    env = Env(environ)
    config = Config(
        host=env.str("WEB_APP_HOST", "0.0.0.0"),
        port=env.port("WEB_APP_PORT", 8080),
        log_dir=Path(env.str("WEB_APP_LOG_DIR", "/var/log/app")),
        log_max_bytes=env.int("WEB_APP_LOG_MAX_BYTES", 256 * 1024, min=1024),
        # At least one backup: with zero, RotatingFileHandler never rotates at all.
        log_backups=env.int("WEB_APP_LOG_BACKUPS", 10, min=1, max=1000),
        threads=env.int("WEB_APP_THREADS", 4, min=1, max=64),
        graceful_timeout=env.int("WEB_APP_GRACEFUL_TIMEOUT", 10, min=1, max=300),
        traffic_max=env.int("WEB_APP_TRAFFIC_MAX", 10_000, min=1, max=1_000_000),
    )
    env.check()
    return config
