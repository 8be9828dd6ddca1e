"""An HTTP app's listening settings, read the same way by each of the suite's Flask apps
(web-app, legacy-app, notes-app), which patterns/common/gunicorn_app.py serves from them.
Kept apart from gunicorn_app.py, which imports gunicorn (the `web` extra): a config.py
imports this, and must import without the extra so that its absence is reported by name.

| variable | default | meaning |
| --- | --- | --- |
| `<PREFIX>_HOST` | the app's (`0.0.0.0` unless it says otherwise) | listen address |
| `<PREFIX>_PORT` | the app's | listen port |
| `<PREFIX>_THREADS` | `4` | threads of the single gunicorn worker (up to 64) |
| `<PREFIX>_GRACEFUL_TIMEOUT` | the app's | seconds in-flight requests get after SIGTERM |
"""

from __future__ import annotations

from dataclasses import dataclass

from patterns.common.config import Env


@dataclass(frozen=True)
class HttpSettings:
    host: str
    port: int
    threads: int
    graceful_timeout: int

    @property
    def bind(self) -> str:
        return f"{self.host}:{self.port}"


def http_settings(
    env: Env,
    prefix: str,
    *,
    host: str = "0.0.0.0",
    port: int = 8080,
    min_threads: int = 1,
    graceful_timeout: int = 10,
) -> HttpSettings:
    return HttpSettings(
        host=env.str(f"{prefix}_HOST", host),
        port=env.port(f"{prefix}_PORT", port),
        threads=env.int(f"{prefix}_THREADS", 4, min=min_threads, max=64),
        graceful_timeout=env.int(f"{prefix}_GRACEFUL_TIMEOUT", graceful_timeout, min=1, max=300),
    )
