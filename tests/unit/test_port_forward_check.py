"""A demo's `kubectl port-forward` check: a forward that starts listening while it is being
checked is the demo's own, not "held by another process" (a loaded CI run saw that)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from demo import containers, ports


def test_a_forward_that_starts_listening_during_the_check_is_ours(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    listening = False

    def held_by(*_args: object, **_kwargs: object) -> bool:
        # The forward binds right after this question: nothing listened when it was asked.
        nonlocal listening
        answer = listening
        listening = True
        return answer

    monkeypatch.setattr(ports, "held_by", held_by)
    monkeypatch.setattr(ports, "in_use", lambda _port, *_a, **_k: listening)
    monkeypatch.setattr(ports, "session_members", lambda pid, *_a, **_k: {pid})
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        forward = containers.PortForward(proc, 1, tmp_path / "log")
        assert forward.problem() is None  # not yet listening: wait for it
        assert forward.problem() is None  # listening, and ours
    finally:
        proc.kill()
        proc.wait()


def test_a_port_held_by_another_process_is_named(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ports, "held_by", lambda *_a, **_k: False)
    monkeypatch.setattr(ports, "in_use", lambda *_a, **_k: True)
    monkeypatch.setattr(ports, "holder", lambda _port: "nc (pid 4242)")
    monkeypatch.setattr(ports, "session_members", lambda pid, *_a, **_k: {pid})
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        problem = containers.PortForward(proc, 8084, tmp_path / "log").problem()
        assert problem is not None and "held by nc (pid 4242)" in problem
    finally:
        proc.kill()
        proc.wait()
