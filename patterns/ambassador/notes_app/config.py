"""notes-app settings, all from environment variables (see the ambassador lab guide)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from patterns.common.config import Env
from patterns.common.http_settings import HttpSettings, http_settings


@dataclass(frozen=True)
class Config:
    http: HttpSettings  # NOTES_APP_HOST, _PORT, _THREADS, _GRACEFUL_TIMEOUT
    # libpq URL or key=value string; the password can come from PGPASSWORD (a Secret).
    database_url: str
    pool_size: int
    # How long a request waits for a pooled connection before showing the error.
    db_timeout: float


def load_config(environ: Mapping[str, str]) -> Config:
    env = Env(environ)
    config = Config(
        http=http_settings(env, "NOTES_APP"),
        database_url=env.str("DATABASE_URL", "postgresql://notes@localhost:5432/notes"),
        pool_size=env.int("NOTES_APP_POOL_SIZE", 4, min=1, max=100),
        db_timeout=env.float("NOTES_APP_DB_TIMEOUT", 5.0, min=0.1, max=300),
    )
    env.check()
    return config
