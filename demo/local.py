"""Run a pattern's services as local processes: the "pod" is this machine's loopback and
a temporary directory stands in for the shared volume."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import requests

from demo import ROOT, lifecycle, ports
from demo.console import say
from demo.errors import DemoError, Stopped
from demo.processes import TEMP_PREFIX, Record, identity, remove_directory, stop_group

__all__ = ["ROOT", "LocalPod", "demo_seconds", "say", "wait_http"]


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


class LocalPod:
    """Processes started for one demo, stopped together like a pod: in reverse start order,
    SIGTERM then SIGKILL. Use it as a context manager.

    Each process and the temporary directory are written down as they start
    (demo.processes.Record), so `make demo-clean` stops them if the runner itself is killed.
    A run stopped by SIGTERM or SIGHUP removes the directory (nobody is left to look at
    it); any other end keeps it for the user and says where it is."""

    def __init__(self, name: str, state_dir: Path | None = None) -> None:
        self.name = name
        self.record = Record(name, state_dir)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{name}-"))
        self.record.add_directory(self.workdir)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, Sequence[int]] = {}

    def __enter__(self) -> LocalPod:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with lifecycle.shielded():
            self.stop_all()
            if isinstance(exc, Stopped):
                remove_directory(self.workdir)
                self.record.forget()
                say(f"removed {self.workdir}")
            else:
                say(f"everything the demo wrote is under {self.workdir} "
                    "(`make demo-clean` removes it)")

    def path(self, *parts: str) -> Path:
        path = self.workdir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log_of(self, name: str) -> Path:
        return self.workdir / "logs-of-processes" / f"{name}.log"

    def start(self, name: str, module: str, env: Mapping[str, str],
              listens_on: Sequence[int] = ()) -> None:
        """`python -m module`; `listens_on`: the ports it must hold once it is ready."""
        log_file = self.path("logs-of-processes") / f"{name}.log"
        with open(log_file, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", module],
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                # Own session and process group: Ctrl-C in the terminal reaches only the
                # runner, which then stops the services in order, as a pod's kubelet would.
                start_new_session=True,
            )
        self.procs[name] = proc
        self.ports[name] = tuple(listens_on)
        self.record.add_process(name, proc.pid)
        say(f"started {name} (pid {proc.pid}), output in {log_file}")

    def _exited(self, name: str, when: str) -> DemoError:
        proc = self.procs[name]
        last = _last_line(self.log_of(name))
        return DemoError(f"{name} (pid {proc.pid}) exited with {proc.returncode} {when}"
                         + (f": {last}" if last else "") + f"; its output: {self.log_of(name)}")

    def _foreign(self, name: str, port: int) -> str | None:
        """Why what listens on `port` is not `name` as started here, or None if it is (or
        this machine cannot tell: no /proc; the ports were free before it started)."""
        pid = self.procs[name].pid
        held = ports.held_by(port, "127.0.0.1", ports.session_members(pid))
        if held is not False:
            return None
        return (f"port {port} is held by {ports.holder(port)}, not by the {name} this demo "
                f"started (pid {pid})")

    def wait_ready(self, name: str, url: str, timeout: float = 30.0) -> None:
        """Until `url` answers 200 from `name` itself: the process is alive and holds the
        URL's port and every port it was started to listen on. Another process answering
        there is an error, not readiness."""
        proc = self.procs[name]
        port = urlsplit(url).port
        assert port is not None, url
        must_hold = [port, *(p for p in self.ports[name] if p != port)]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise self._exited(name, "while starting")
            try:
                answered = requests.get(url, timeout=1).status_code == 200
            except requests.RequestException:
                answered = False
            if answered:
                problems = [why for why in (self._foreign(name, p) for p in must_hold) if why]
                if problems and proc.poll() is None:
                    raise DemoError(f"{url} answers, but {'; '.join(problems)}: stop that "
                                    "process and run the demo again")
                if not problems:
                    say(f"{name} is ready ({url}, pid {proc.pid})")
                    return
            time.sleep(0.2)
        raise DemoError(f"{name} not ready after {timeout:.0f}s ({url}); its output: "
                        f"{self.log_of(name)}")

    def check_running(self) -> None:
        """DemoError if a process this demo started has exited: no verdict about others."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise self._exited(name, "during the demo")

    def stop(self, name: str, timeout: float = 30.0) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        stop_group(proc.pid, identity(proc.pid), timeout, hurry=lifecycle.hurrying)
        code = proc.wait()
        self.record.remove_process(proc.pid)
        return code

    def stop_all(self) -> None:
        # Reverse start order, as Kubernetes does with native sidecars: a pattern starts
        # its sidecar before the app, so the app stops first and the sidecar still sees
        # (and ships) the app's last lines.
        for name in reversed(list(self.procs)):
            code = self.stop(name)
            say(f"stopped {name} (exit {code})")


def demo_seconds(default: float = 0) -> float:
    """DEMO_SECONDS: how long a local demo runs before it stops by itself (0 = until
    Ctrl-C)."""
    raw = os.environ.get("DEMO_SECONDS", "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise DemoError(f"DEMO_SECONDS={raw!r}: expected a number of seconds") from None
    if value < 0:
        raise DemoError(f"DEMO_SECONDS={raw!r}: expected a number of seconds >= 0")
    return value


def wait_http(url: str, timeout: float = 120, check: Callable[[], None] = lambda: None) -> None:
    """Until `url` answers 200 from what this demo started (containers and port-forwards
    take a while): `check()` raises DemoError when what answers there, or would, is not
    what the demo started (a container gone, a port held by another process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                check()
                return
        except requests.RequestException:
            pass
        check()
        time.sleep(1)
    raise DemoError(f"not ready after {timeout:.0f}s: {url}")
