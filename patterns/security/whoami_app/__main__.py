"""`whoami-app`: serve the security lab's app under gunicorn (settings: WHOAMI_APP_* env)."""

from __future__ import annotations

import logging
import os
import sys

from patterns.common.config import ConfigError
from patterns.common.jsonlog import setup_logging
from patterns.common.service import EXIT_CONFIG, exit_if_extra_missing

SERVICE = "whoami-app"
log = logging.getLogger("patterns.security.whoami_app")


def main() -> None:
    from patterns.security.whoami_app.config import load_config

    setup_logging(SERVICE, os.environ.get("LOG_LEVEL", "info"))
    try:
        config = load_config(os.environ)
    except ConfigError as exc:
        print(f"{SERVICE}: configuration error: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    try:
        from patterns.security.whoami_app.server import whoami_app_server
    except ModuleNotFoundError as exc:  # Flask or gunicorn: the `web` extra
        exit_if_extra_missing(SERVICE, exc)
        raise
    log.info("starting", extra={"bind": f"{config.host}:{config.port}"})
    whoami_app_server(config).run()  # gunicorn's master: SIGTERM stops it gracefully, exit 0


if __name__ == "__main__":
    main()
