"""whoami-app settings, all from environment variables (see the security lab guide)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from patterns.common.config import Env
from patterns.common.http_settings import HttpSettings, http_settings


@dataclass(frozen=True)
class Config:
    # WHOAMI_APP_HOST, _PORT, _THREADS, _GRACEFUL_TIMEOUT. 127.0.0.1 by default: in the pod
    # only the tls-proxy (same network namespace) reaches it, which is why the app may
    # trust the identity headers.
    http: HttpSettings
    # Longer than the proxy's idle timeout (PROXY_IDLE_TIMEOUT_SECONDS, 60 s): the proxy,
    # not the app, closes an idle kept-alive connection, so a request the proxy relays
    # never races the app's close of the connection it travels on.
    keepalive: int


def load_config(environ: Mapping[str, str]) -> Config:
    env = Env(environ)
    config = Config(
        http=http_settings(env, "WHOAMI_APP", host="127.0.0.1", graceful_timeout=30),
        keepalive=env.int("WHOAMI_APP_KEEPALIVE_SECONDS", 75, min=1, max=3600),
    )
    env.check()
    return config
