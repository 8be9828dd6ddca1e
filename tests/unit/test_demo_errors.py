"""No traceback reaches a user from `make demo-*` or `make ambassador-failover`: an expected
failure is one line that says what to do; an unexpected one is one line too, naming the log
file that holds its details. Whatever the end, what the run started is torn down."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests

import demo.__main__ as runner
from demo import lifecycle, sidecar
from demo.errors import DemoError
from demo.runtimes import Choice


@pytest.fixture
def demo_raising(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Run the sidecar demo on Compose (no port in use) with its run ending in `error`;
    returns (exit status, stderr lines, teardowns run)."""
    monkeypatch.setattr(runner, "choose", lambda *_args: Choice("compose", "test"))
    monkeypatch.setattr(runner, "check_ports", lambda *_args: None)
    monkeypatch.setattr(runner, "ERROR_LOG", tmp_path / "demo-error.log")
    torn_down: list[str] = []

    def run(error: BaseException, capsys: pytest.CaptureFixture[str]):
        def run_compose() -> None:
            lifecycle.on_abort("the test's containers", lambda: torn_down.append("down"))
            raise error

        monkeypatch.setattr(sidecar, "run_compose", run_compose)
        status = runner.main(["sidecar"])
        return status, capsys.readouterr().err.splitlines(), torn_down

    return run


def test_an_expected_failure_is_one_line(demo_raising, capsys) -> None:
    status, err, torn_down = demo_raising(DemoError("not ready after 120s: http://x"), capsys)
    assert (status, err, torn_down) == (1, ["demo: not ready after 120s: http://x"], ["down"])


def test_a_failed_command_is_one_line_naming_it(demo_raising, capsys) -> None:
    failed = subprocess.CalledProcessError(
        1, ["docker-compose", "--profile", "sidecar", "up", "-d"],
        stderr="ERROR: for sidecar-main  Cannot start service: bind: address already in use\n")
    status, err, torn_down = demo_raising(failed, capsys)
    assert status == 1 and torn_down == ["down"]
    assert err == ["demo: `docker-compose --profile sidecar up -d` failed with exit 1: "
                   "ERROR: for sidecar-main  Cannot start service: bind: address already in use"]


def test_a_service_that_stops_answering_is_one_line(demo_raising, capsys) -> None:
    lost = requests.ConnectionError("refused", request=requests.Request(
        "GET", "http://127.0.0.1:8080/api/stats").prepare())
    status, err, _ = demo_raising(lost, capsys)
    assert status == 1 and len(err) == 1
    assert err[0].startswith("demo: http://127.0.0.1:8080/api/stats did not answer")


def test_an_unexpected_error_is_one_line_and_its_details_go_to_a_log(
        demo_raising, capsys, tmp_path: Path) -> None:
    status, err, torn_down = demo_raising(KeyError("last_seq"), capsys)
    assert status == 1 and torn_down == ["down"]
    assert err == [f"demo: unexpected error: KeyError: 'last_seq' (the details are in "
                   f"{tmp_path / 'demo-error.log'}; please report it)"]
    details = (tmp_path / "demo-error.log").read_text()
    assert details.startswith("Traceback") and "run_compose" in details


def test_a_normal_end_leaves_the_containers_up_to_explore(
        monkeypatch: pytest.MonkeyPatch) -> None:
    torn_down: list[str] = []
    monkeypatch.setattr(runner, "choose", lambda *_args: Choice("compose", "test"))
    monkeypatch.setattr(runner, "check_ports", lambda *_args: None)
    monkeypatch.setattr(sidecar, "run_compose", lambda: lifecycle.on_abort(
        "the test's containers", lambda: torn_down.append("down")))
    assert runner.main(["sidecar"]) == 0
    lifecycle.abort()  # a later abort finds nothing of this run
    assert torn_down == []
