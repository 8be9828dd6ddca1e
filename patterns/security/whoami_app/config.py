"""whoami-app settings, all from environment variables (see the security lab guide)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from patterns.common.config import Env


@dataclass(frozen=True)
class Config:
    # 127.0.0.1 by default: in the pod only the tls-proxy (same network namespace) reaches
    # it, which is why the app may trust the identity headers.
    host: str
    port: int
    threads: int
    # Longer than the proxy's idle timeout (PROXY_IDLE_TIMEOUT_SECONDS, 60 s): the proxy,
    # not the app, closes an idle kept-alive connection, so a request the proxy relays
    # never races the app's close of the connection it travels on.
    keepalive: int


def load_config(environ: Mapping[str, str]) -> Config:
    env = Env(environ)
    config = Config(
        host=env.str("WHOAMI_APP_HOST", "127.0.0.1"),
        port=env.port("WHOAMI_APP_PORT", 8080),
        threads=env.int("WHOAMI_APP_THREADS", 4, min=1, max=64),
        keepalive=env.int("WHOAMI_APP_KEEPALIVE_SECONDS", 75, min=1, max=3600),
    )
    env.check()
    return config
