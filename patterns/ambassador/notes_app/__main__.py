"""`notes-app` serves the notes service under gunicorn (settings: NOTES_APP_*, DATABASE_URL)."""

from __future__ import annotations

import logging
import os
import sys

from patterns.common.config import ConfigError
from patterns.common.jsonlog import setup_logging
from patterns.common.service import EXIT_CONFIG, exit_if_extra_missing

from .config import load_config

log = logging.getLogger("patterns.ambassador.notes_app")
SERVICE = "notes-app"


def main() -> None:
    setup_logging(SERVICE, os.environ.get("LOG_LEVEL", "info"))
    try:
        config = load_config(os.environ)
    except ConfigError as exc:
        print(f"{SERVICE}: configuration error: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    try:
        from .server import notes_server
    except ModuleNotFoundError as exc:  # Flask/gunicorn (`web`) or psycopg (`db`)
        exit_if_extra_missing(SERVICE, exc)
        raise

    log.info("starting", extra={"bind": f"{config.host}:{config.port}"})
    # gunicorn parses sys.argv; the settings come from the environment only.
    sys.argv = sys.argv[:1]
    notes_server(config).run()  # gunicorn's master: SIGTERM stops it gracefully, exit 0


if __name__ == "__main__":
    main()
