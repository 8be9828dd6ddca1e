"""`legacy-app`: serve the legacy shop under gunicorn (settings: LEGACY_APP_* env)."""

from __future__ import annotations

import os
import sys

from patterns.common.config import ConfigError
from patterns.common.service import EXIT_CONFIG, exit_if_extra_missing

SERVICE = "legacy-app"


def main() -> None:
    from patterns.adapter.legacy_app.config import load_config

    try:
        config = load_config(os.environ)
    except ConfigError as exc:
        print(f"{SERVICE}: configuration error: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    try:
        config.log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(
            f"{SERVICE}: configuration error: LEGACY_APP_LOG_DIR={config.log_dir}: {exc.strerror}",
            file=sys.stderr,
        )
        sys.exit(EXIT_CONFIG)
    if not os.access(config.log_dir, os.W_OK | os.X_OK):
        print(
            f"{SERVICE}: configuration error: LEGACY_APP_LOG_DIR={config.log_dir}: "
            f"not writable by uid {os.getuid()}",
            file=sys.stderr,
        )
        sys.exit(EXIT_CONFIG)

    try:
        from patterns.adapter.legacy_app.server import legacy_app_server
    except ModuleNotFoundError as exc:  # Flask or gunicorn: the `web` extra
        exit_if_extra_missing(SERVICE, exc)
        raise

    legacy_app_server(config).run()  # gunicorn's master: SIGTERM stops it gracefully


if __name__ == "__main__":
    main()
