"""How a demo run ends, whatever ends it.

SIGINT (Ctrl-C), SIGTERM and SIGHUP (the terminal closed) all unwind the runner, as
KeyboardInterrupt and Stopped, so that every `with`/`finally` on the way tears down what it
started. What outlives the runner on a normal end (Compose containers, kind workloads: they
stay up to be explored) registers a teardown with `on_abort`; `abort()` runs those when the
run ends any other way: a signal, an error.

While tearing down, a further signal does not interrupt the teardown (that would leave
things half-stopped): it asks it to hurry (SIGKILL instead of a graceful wait).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType

from demo.console import say, warn
from demo.errors import Stopped

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_teardowns: dict[str, Callable[[], None]] = {}
_hurry = False


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signum)


def install_signal_handlers() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)


def on_abort(what: str, teardown: Callable[[], None]) -> None:
    """Run `teardown` if this run ends abnormally (once per `what`)."""
    _teardowns.setdefault(what, teardown)


def abort() -> None:
    """Run the registered teardowns, the last registered first; a failing one is reported,
    and the others still run."""
    with shielded():
        for what in reversed(list(_teardowns)):
            teardown = _teardowns.pop(what)
            say(f"tearing down {what}")
            try:
                teardown()
            except Exception as error:  # report it, and tear down the rest
                warn(f"demo: could not tear down {what}: {error}")


def forget_aborts() -> None:
    """A normal end: what runs stays up for the user to explore (`make demo-clean`)."""
    _teardowns.clear()


def hurrying() -> bool:
    return _hurry


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Signals during the block make `hurrying()` true instead of raising."""
    global _hurry
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}

    def hurry(_signum: int, _frame: FrameType | None) -> None:
        global _hurry
        if not _hurry:
            _hurry = True
            say("stopping what is left at once (SIGKILL)")

    for signum in SIGNALS:
        signal.signal(signum, hurry)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
