"""The web-app's settings, all from environment variables (see the sidecar lab guide)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from patterns.common.config import Env
from patterns.common.http_settings import HttpSettings, http_settings

ACCESS_LOG_NAME = "access.log"


@dataclass(frozen=True)
class Config:
    http: HttpSettings  # WEB_APP_HOST, WEB_APP_PORT, WEB_APP_THREADS, WEB_APP_GRACEFUL_TIMEOUT
    log_dir: Path
    # Small by default so that a minute of demo traffic shows several rotations.
    log_max_bytes: int
    log_backups: int
    # Upper bound of /traffic?n=: one request must not be able to outrun the shipper by
    # more than the rotated files kept on disk (log_backups * log_max_bytes).
    traffic_max: int

    @property
    def access_log_path(self) -> Path:
        return self.log_dir / ACCESS_LOG_NAME


def load_config(environ: Mapping[str, str]) -> Config:
    env = Env(environ)
    config = Config(
        http=http_settings(env, "WEB_APP"),
        log_dir=env.writable_dir("WEB_APP_LOG_DIR", "/var/log/app"),
        log_max_bytes=env.int("WEB_APP_LOG_MAX_BYTES", 256 * 1024, min=1024),
        # At least one backup: with zero, RotatingFileHandler never rotates at all.
        log_backups=env.int("WEB_APP_LOG_BACKUPS", 10, min=1, max=1000),
        traffic_max=env.int("WEB_APP_TRAFFIC_MAX", 10_000, min=1, max=1_000_000),
    )
    env.check()
    return config
