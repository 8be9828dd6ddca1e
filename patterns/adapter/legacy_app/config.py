"""legacy-app settings, all from environment variables (see the adapter lab guide)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from patterns.common.config import Env
from patterns.common.http_settings import HttpSettings, http_settings

ACCESS_LOG_NAME = "access.log"
APP_LOG_NAME = "app.log"


@dataclass(frozen=True)
class Config:
    # LEGACY_APP_HOST, _PORT, _THREADS (at least 2: /traffic calls the app itself) and
    # _GRACEFUL_TIMEOUT (gunicorn's default, 30 s)
    http: HttpSettings
    log_dir: Path
    # Share of /checkout requests that fail with a logged traceback (demo traffic).
    error_rate: float
    traffic_max: int

    @property
    def access_log_path(self) -> Path:
        return self.log_dir / ACCESS_LOG_NAME

    @property
    def app_log_path(self) -> Path:
        return self.log_dir / APP_LOG_NAME


def load_config(environ: Mapping[str, str]) -> Config:
    env = Env(environ)
    config = Config(
        http=http_settings(env, "LEGACY_APP", min_threads=2, graceful_timeout=30),
        log_dir=env.writable_dir("LEGACY_APP_LOG_DIR", "/var/log/app"),
        error_rate=env.float("LEGACY_APP_ERROR_RATE", 0.2, min=0.0, max=1.0),
        traffic_max=env.int("LEGACY_APP_TRAFFIC_MAX", 1000, min=1, max=100_000),
    )
    env.check()
    return config
