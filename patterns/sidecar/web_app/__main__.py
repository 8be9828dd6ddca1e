"""`web-app` serves the demo app; `web-app batch --lines N` writes N lines and exits."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from patterns.common.config import ConfigError
from patterns.common.jsonlog import setup_logging
from patterns.common.service import EXIT_CONFIG, exit_if_extra_missing
from patterns.sidecar.web_app.config import Config, load_config

log = logging.getLogger("patterns.sidecar.web_app")

SERVICE = "web-app"


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=SERVICE, description="The sidecar pattern's demo app (settings: WEB_APP_* env)."
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve HTTP under gunicorn (the default)")
    batch = commands.add_parser("batch", help="write N access-log lines, then exit")
    batch.add_argument("--lines", type=int, default=10_000, help="lines to write (default 10000)")
    batch.add_argument(
        "--rate",
        type=float,
        default=2000.0,
        help="lines per second, 0 for as fast as possible (default 2000)",
    )
    args = parser.parse_args(argv)
    if args.command == "batch" and (args.lines < 1 or args.rate < 0):
        parser.error("--lines must be at least 1 and --rate at least 0")
    return args


def _check_log_dir(config: Config) -> str | None:
    """Fail at start, with the variable's name, rather than in a worker after the fork."""
    try:
        config.log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"WEB_APP_LOG_DIR={config.log_dir}: {exc.strerror}"
    if not os.access(config.log_dir, os.W_OK | os.X_OK):
        return f"WEB_APP_LOG_DIR={config.log_dir}: not writable by uid {os.getuid()}"
    return None


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(SERVICE, os.environ.get("LOG_LEVEL", "info"))
    try:
        config = load_config(os.environ)
    except ConfigError as exc:
        print(f"{SERVICE}: configuration error: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    problem = _check_log_dir(config)
    if problem is not None:
        print(f"{SERVICE}: configuration error: {problem}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)

    if args.command == "batch":
        from patterns.sidecar.web_app.batch import run_batch

        sys.exit(run_batch(config, args.lines, args.rate))

    try:
        from patterns.sidecar.web_app.server import web_app_server
    except ModuleNotFoundError as exc:  # Flask or gunicorn: the `web` extra
        exit_if_extra_missing(SERVICE, exc)
        raise

    log.info(
        "starting",
        extra={"bind": f"{config.host}:{config.port}", "access_log": str(config.access_log_path)},
    )
    web_app_server(config).run()  # gunicorn's master: SIGTERM stops it gracefully, exit 0


if __name__ == "__main__":
    main()
