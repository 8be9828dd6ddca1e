"""What a demo prints."""

from __future__ import annotations

import os
import sys


def say(message: str) -> None:
    """One `==> ` line on stdout. A closed terminal (SIGHUP) makes writes fail with EIO:
    the demo still has to tear down what it started, so that is no error here."""
    try:
        print(f"==> {message}", flush=True)
    except OSError:
        # Every later write would fail the same way, Python's own flush at exit included.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)


def warn(message: str) -> None:
    """One line on stderr: an error the user acts on."""
    try:
        print(message, file=sys.stderr, flush=True)
    except OSError:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115


def explore(commands: list[str], guide: str | None = None) -> None:
    """After a demo that leaves its pods up: commands to look around with (`# ...` after
    one says what it shows), and last how to remove it all."""
    where = f" ({guide})" if guide else ""
    say(f"explore{where}:\n" + "".join(f"  {command}\n" for command in commands)
        + "  make demo-clean")
