"""What a demo's expected failures raise: the message is the one line the user sees."""

from __future__ import annotations


class DemoError(Exception):
    """An expected failure: its message says what happened and what to do, in one line."""


class Stopped(BaseException):
    """SIGTERM or SIGHUP (the terminal closed) reached the demo: unwind and tear down what
    it started. A BaseException, like KeyboardInterrupt, so that no `except Exception`
    on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
