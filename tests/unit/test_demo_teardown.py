"""A local demo tears down what it started however it ends: SIGHUP (the terminal closed),
SIGTERM and SIGINT stop every process it started, the processes those forked included;
SIGHUP and SIGTERM also remove its temporary directory (nobody is left to look at it).
What a SIGKILLed demo left, `make demo-clean` stops from the record the demo keeps in
.demo/, checking first that each PID still is the process the demo started.

The runner is the real one (demo/__main__.py, demo/local.py) running a stand-in pattern
(tests/unit/standin_demo.py) whose services are tiny HTTP servers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from demo import processes
from tests.conftest import ROOT, free_port, http_ok, wait_until
from tests.unit.standin_demo import runner_script


@dataclass
class Run:
    runner: subprocess.Popen[str]
    state_dir: Path
    tmp: Path

    def record(self) -> dict:
        records = list(self.state_dir.glob("local-standin-*.json"))
        return json.loads(records[0].read_text()) if records else {}

    def started(self) -> dict[str, int]:
        """name -> pid of every process the demo started and every helper those forked."""
        pids = {p["name"]: int(p["pid"]) for p in self.record().get("processes", [])}
        for directory in self.tmp.glob("podpatterns-standin-*"):
            for helper in directory.glob("*.helper-pid"):
                pids[helper.name] = int(helper.read_text())
        return pids

    def alive(self) -> dict[str, int]:
        return {name: pid for name, pid in self.started().items()
                if processes.identity(pid) is not None}

    def directories(self) -> list[Path]:
        return list(self.tmp.glob("podpatterns-standin-*"))


@pytest.fixture
def local_demo(tmp_path: Path) -> Iterator[Run]:
    """The stand-in demo on two free ports, running once both services answer."""
    state_dir, tmp = tmp_path / "state", tmp_path / "tmp"
    tmp.mkdir()
    ports = {"first": free_port(), "second": free_port()}
    runner = subprocess.Popen(
        [sys.executable, "-c", runner_script(state_dir, ports)], cwd=ROOT, text=True,
        env={**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run = Run(runner, state_dir, tmp)
    try:
        wait_until(lambda: runner.poll() is not None or (
            all(http_ok(f"http://127.0.0.1:{port}/readyz") for port in ports.values())
            and len(run.started()) == 4), timeout=30, what="both stand-in services")
        assert runner.poll() is None, runner.communicate()
        yield run
    finally:
        snapshot = run.started()
        if runner.poll() is None:
            runner.kill()
        runner.communicate()
        for pid in snapshot.values():  # whatever a failing test left
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM])
def test_a_closed_terminal_or_sigterm_leaves_no_process_and_no_directory(
        local_demo: Run, signum: int) -> None:
    started = local_demo.started()
    assert len(local_demo.directories()) == 1
    local_demo.runner.send_signal(signum)
    _out, err = local_demo.runner.communicate(timeout=60)
    assert local_demo.runner.returncode == 128 + signum, err
    assert local_demo.alive() == {}, f"left running of {started}"
    assert local_demo.directories() == []
    assert local_demo.record() == {}  # nothing left for demo-clean either
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        f"demo: stopped by {signal.Signals(signum).name}; what it started is stopped"]


def test_ctrl_c_stops_every_process_and_keeps_the_directory_for_demo_clean(
        local_demo: Run) -> None:
    local_demo.runner.send_signal(signal.SIGINT)
    out, err = local_demo.runner.communicate(timeout=60)
    assert local_demo.runner.returncode == 130, err
    assert local_demo.alive() == {}
    [directory] = local_demo.directories()
    assert f"everything the demo wrote is under {directory}" in out
    assert local_demo.record()["processes"] == []
    processes.clean(local_demo.state_dir)
    assert local_demo.directories() == []
    assert local_demo.record() == {}


def test_demo_clean_stops_what_a_killed_demo_left(local_demo: Run) -> None:
    started = local_demo.started()
    local_demo.runner.kill()
    local_demo.runner.wait()
    # The fault: the runner gone, what it started runs on.
    assert local_demo.alive() == started
    processes.clean(local_demo.state_dir)
    assert local_demo.alive() == {}
    assert local_demo.directories() == []
    assert local_demo.record() == {}


def test_demo_clean_stops_a_running_demo_which_tears_itself_down(local_demo: Run) -> None:
    processes.clean(local_demo.state_dir)
    assert local_demo.runner.wait(timeout=60) == 128 + signal.SIGTERM
    assert local_demo.alive() == {}
    assert local_demo.directories() == []


def test_demo_clean_leaves_a_process_that_merely_reuses_a_recorded_pid(
        tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             start_new_session=True)
    try:
        record = {"pattern": "sidecar", "runner": {"pid": other.pid, "identity": "another"},
                  "processes": [{"name": "web-app", "pid": other.pid, "identity": "another"}],
                  "directories": []}
        (tmp_path / "local-sidecar-1.json").write_text(json.dumps(record))
        processes.clean(tmp_path)
        assert other.poll() is None  # not the process the demo started: not touched
        assert list(tmp_path.iterdir()) == []
    finally:
        other.kill()
        other.wait()
