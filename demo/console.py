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
