"""`web-app` serves the demo app; `web-app batch --lines N` writes N lines and exits."""

from __future__ import annotations

import argparse
import sys

from patterns.common.service import RunFunction, Runtime, main_for
from patterns.sidecar.web_app.batch import run_batch
from patterns.sidecar.web_app.config import Config, load_config

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


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    # `serve` by reference: its module imports Flask and gunicorn (the `web` extra), which
    # main_for then reports by name at start instead of a traceback here.
    run: RunFunction[Config] | str = "patterns.sidecar.web_app.run:run"
    if args.command == "batch":

        def run(config: Config, runtime: Runtime) -> int:
            return run_batch(config, runtime, args.lines, args.rate)

    main_for(SERVICE, load_config, run)()


if __name__ == "__main__":
    main()
