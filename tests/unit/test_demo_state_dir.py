"""DEMO_STATE_DIR: what the demos record (and so what `make demo-clean` stops) is one state
directory's. The guide tier's sessions have their own, so that a guide's `make demo-clean`
leaves a user's running demo alone, and the user's leaves the guide's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from demo import containers, podman, processes
from tests.conftest import ROOT, free_port, http_ok, wait_until
from tests.guide.harness import session_env


def _state_dir_of(env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-c", "import demo; print(demo.STATE_DIR)"],
                          cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_state_directory_is_demo_state_dir_relative_to_the_root(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "DEMO_STATE_DIR"}
    assert _state_dir_of(env) == str(ROOT / ".demo")
    assert _state_dir_of({**env, "DEMO_STATE_DIR": "build/demo-state"}) == \
        str(ROOT / "build" / "demo-state")
    assert _state_dir_of({**env, "DEMO_STATE_DIR": str(tmp_path)}) == str(tmp_path)


def test_a_guide_session_has_a_state_directory_of_its_own(tmp_path: Path) -> None:
    state_dir = Path(session_env("local", tmp_path)["DEMO_STATE_DIR"])
    assert state_dir.is_relative_to(tmp_path), "removed with the session's directory"


# A local demo (the stand-in pattern of tests/unit/standin_demo.py, its record in the state
# directory DEMO_STATE_DIR names), and `python -m demo --clean` as `make demo-clean` runs it,
# with only the local part: Compose, kind and podman are the machine's.
RUNNER = """
import sys
import demo.__main__ as runner
from tests.unit import standin_demo
standin_demo.PORTS.update({"only": int(sys.argv[1])})
sys.modules["demo.standin"] = standin_demo
runner.PATTERNS = (*runner.PATTERNS, "standin")
sys.exit(runner.main(["standin", "--runtime", "local"]))
"""
CLEAN = """
import sys
import demo.__main__ as runner
runner.PATTERNS = ()
runner.containers.clean = lambda *args, **kwargs: None
sys.exit(runner.main(["--clean"]))
"""


def test_demo_clean_stops_the_demos_of_its_state_directory_only(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    mine, other = tmp_path / "mine", tmp_path / "other"
    port = free_port()
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(port)], cwd=ROOT, text=True,
                              env={**env, "DEMO_STATE_DIR": str(mine)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: runner.poll() is not None or http_ok(f"http://127.0.0.1:{port}/"),
                   timeout=30, what="the stand-in demo")
        assert runner.poll() is None, runner.communicate()
        assert list(mine.glob("local-standin-*.json")), "the demo records in DEMO_STATE_DIR"

        subprocess.run([sys.executable, "-c", CLEAN], cwd=ROOT, check=True, timeout=120,
                       env={**env, "DEMO_STATE_DIR": str(other)}, capture_output=True)
        assert runner.poll() is None, "another state directory's demo-clean stopped it"
        assert http_ok(f"http://127.0.0.1:{port}/")

        subprocess.run([sys.executable, "-c", CLEAN], cwd=ROOT, check=True, timeout=120,
                       env={**env, "DEMO_STATE_DIR": str(mine)}, capture_output=True)
        runner.communicate(timeout=60)
        assert not http_ok(f"http://127.0.0.1:{port}/")
        assert not list(mine.glob("local-*.json"))
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()


@pytest.fixture
def podman_calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """containers.clean() on a machine with podman only (no Compose, no kind), recording
    which patterns' pods it removes; the state directory is tmp_path."""
    removed: list[str] = []
    monkeypatch.setattr(processes, "STATE_DIR", tmp_path)
    monkeypatch.setattr(containers, "compose_command", lambda: None)
    monkeypatch.setattr(containers.shutil, "which",
                        lambda tool: "/usr/bin/podman" if tool == "podman" else None)
    monkeypatch.setattr(podman, "clean", lambda pattern: removed.append(pattern) or [])
    monkeypatch.setattr(podman, "remove_network", lambda: False)
    return removed


def test_demo_clean_removes_the_podman_pods_its_state_directory_played(
        podman_calls: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "built_images", lambda: {})
    monkeypatch.setattr(podman, "start", lambda *args, **kwargs: None)
    containers.podman_up("adapter", {})
    assert processes.played("podman") == ["adapter"]

    containers.clean(["sidecar", "adapter", "ambassador"])
    assert podman_calls == ["adapter"], "another state directory's pods are not ours"
    assert processes.played("podman") == []


def test_without_a_record_no_podman_pod_is_removed(podman_calls: list[str]) -> None:
    containers.clean(["sidecar", "adapter", "ambassador"])
    assert podman_calls == []
