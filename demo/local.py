"""Run a pattern's services as local processes: the "pod" is this machine's loopback and
a temporary directory stands in for the shared volume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


@dataclass
class LocalPod:
    """Processes started for one demo, stopped together (SIGTERM, then SIGKILL) like a pod."""

    name: str
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="podpatterns-")))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        path = self.workdir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start(self, name: str, module: str, env: Mapping[str, str]) -> None:
        log_file = self.path("logs-of-processes") / f"{name}.log"
        with open(log_file, "ab") as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", module],
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                # Own process group: Ctrl-C in the terminal reaches only the runner, which
                # then stops the services in order, as a pod's kubelet would.
                start_new_session=True,
            )
        say(f"started {name} (pid {self.procs[name].pid}), output in {log_file}")

    def wait_ready(self, name: str, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                log = (self.workdir / "logs-of-processes" / f"{name}.log").read_text()
                raise SystemExit(f"{name} exited with {proc.returncode}:\n{log[-2000:]}")
            try:
                if requests.get(url, timeout=1).status_code == 200:
                    say(f"{name} is ready ({url})")
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{name} not ready after {timeout:.0f}s ({url})")

    def stop(self, name: str, timeout: float = 30.0) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

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
        raise SystemExit(f"DEMO_SECONDS={raw!r}: expected a number of seconds") from None
    if value < 0:
        raise SystemExit(f"DEMO_SECONDS={raw!r}: expected a number of seconds >= 0")
    return value


def wait_http(url: str, timeout: float = 120) -> None:
    """Until `url` answers 200 (containers and port-forwards take a while), or exit saying
    which URL never did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise SystemExit(f"not ready after {timeout:.0f}s: {url}")
