"""The demos' two loops over time: waiting for a state with a deadline, and the traffic
loop that shows a pattern at work for DEMO_SECONDS (or until Ctrl-C)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import requests

from demo.console import say
from demo.errors import DemoError

T = TypeVar("T")


def poll(predicate: Callable[[], T], timeout: float, interval: float = 0.25) -> T | None:
    """`predicate()` until it returns a truthy value, which it returns; None once `timeout`
    seconds have passed (it is called once more at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def how_long(seconds: float) -> str:
    return "until Ctrl-C" if not seconds else f"for {seconds:.0f}s"


def every_second(seconds: float, check: Callable[[], None], step: Callable[[], str]) -> None:
    """`step()` once a second until `seconds` have passed (0: until Ctrl-C), saying what it
    returns after the time elapsed. `check()` comes before each step and raises when
    something the demo started is gone; a step whose service does not answer is checked
    once more (the precise reason, if a process or container is gone) and ends the demo:
    nothing else is counted."""
    started = time.monotonic()
    try:
        while not seconds or time.monotonic() - started < seconds:
            check()
            try:
                line = step()
            except requests.RequestException as error:
                check()
                raise DemoError(f"the demo's services stopped answering: {error}") from None
            say(f"{time.monotonic() - started:5.0f}s  {line}")
            time.sleep(1)
    except KeyboardInterrupt:
        say("Ctrl-C: stopping")
