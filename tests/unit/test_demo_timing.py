"""The demos' loops over time (demo/timing.py): the traffic loop every demo shows its
pattern with, and polling for a state with a deadline."""

from __future__ import annotations

import pytest
import requests

from demo import timing
from demo.errors import DemoError


@pytest.fixture
def said(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    lines: list[str] = []
    monkeypatch.setattr(timing, "say", lines.append)
    monkeypatch.setattr(timing.time, "sleep", lambda _seconds: None)
    return lines


def test_a_step_whose_service_stopped_answering_ends_the_demo_with_the_precise_reason(
        said: list[str]) -> None:
    checks = iter([None, DemoError("web-app (pid 7) exited with 2")])

    def check() -> None:
        problem = next(checks)
        if problem:
            raise problem

    def step() -> str:
        raise requests.ConnectionError("refused")

    with pytest.raises(DemoError, match=r"web-app .* exited with 2"):
        timing.every_second(5, check, step)
    assert said == [], "no line counted after the service went"


def test_a_step_that_fails_with_everything_running_says_the_services_stopped_answering(
        said: list[str]) -> None:
    def step() -> str:
        raise requests.ConnectionError("refused")

    with pytest.raises(DemoError, match="stopped answering: refused"):
        timing.every_second(5, lambda: None, step)


def test_ctrl_c_ends_the_loop_and_says_so(said: list[str]) -> None:
    steps = iter(["first", KeyboardInterrupt()])

    def step() -> str:
        value = next(steps)
        if isinstance(value, BaseException):
            raise value
        return value

    timing.every_second(0, lambda: None, step)
    assert [line.split()[-1] for line in said] == ["first", "stopping"]


def test_poll_returns_the_first_truthy_value_or_none_at_the_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timing.time, "sleep", lambda _seconds: None)
    values = iter([0, None, 3])
    assert timing.poll(lambda: next(values), timeout=60) == 3
    assert timing.poll(lambda: 0, timeout=0) is None
