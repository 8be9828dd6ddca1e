"""What a local demo started, written down in .demo/ as it starts it, so that
`make demo-clean` can stop it after the demo itself was killed (SIGKILL, a crash, an
out-of-memory kill): each process by PID with what tells it from a later process with the
same PID (its start time), and the temporary directories to remove.

Pods a demo plays on podman are written down there too (podman's names for them are fixed,
the manifests' own): `make demo-clean` removes those of the patterns its state directory
recorded, not another state directory's. Compose is scoped by its project
(COMPOSE_PROJECT_NAME); kind's namespaces are the cluster's, whoever applied them.

Every process a demo starts leads a session and a process group of its own (Ctrl-C in the
terminal reaches only the runner, which stops them in order), so stopping one means
signalling its group: whatever it forked goes too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from demo import STATE_DIR
from demo.console import say

PROC = Path("/proc")
# Temporary directories a demo makes start with this; demo-clean removes no other.
TEMP_PREFIX = "podpatterns-"


def _boot_id() -> str:
    try:
        return (PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return ""


def identity(pid: int) -> str | None:
    """What tells process `pid` from a later one with the same PID (None: no such live
    process): the boot and its start time on Linux, `ps -o lstart=` elsewhere. A zombie
    counts as gone."""
    if PROC.is_dir():
        try:
            stat = (PROC / str(pid) / "stat").read_text()
        except OSError:
            return None
        # pid (comm) state ppid ... starttime (field 22): comm may hold spaces and ")".
        fields = stat[stat.rfind(")") + 2:].split()
        return None if fields[0] in "ZX" else f"{_boot_id()}:{fields[19]}"
    try:
        out = subprocess.run(["ps", "-o", "stat=,lstart=", "-p", str(pid)],
                             capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    state, _, started = out.strip().partition(" ")
    return None if not state or state.startswith("Z") else started.strip()


def alive(pid: int, ident: str | None) -> bool:
    return ident is not None and identity(pid) == ident


def _group_alive(pgid: int) -> bool:
    """Whether process group `pgid` has a member that is not a zombie (an orphan's zombie
    stays until PID 1 reaps it, and some containers' PID 1 never does)."""
    if PROC.is_dir():
        for entry in PROC.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()  # state ppid pgrp ...
            if int(fields[2]) == pgid and fields[0] not in "ZX":
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pid: int, ident: str | None, timeout: float = 30.0,
               hurry: Callable[[], bool] = lambda: False) -> bool:
    """SIGTERM to the process group `pid` leads, SIGKILL after `timeout` (or at once when
    `hurry()` says so), and wait until it is gone. Only if `pid` still is the process
    `ident` names: a PID reused by another process is left alone. False if it was not."""
    if not alive(pid, ident):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid, ident) and time.monotonic() < deadline and not hurry():
        time.sleep(0.1)
    # The leader gone, its group may still have members (a gunicorn worker): a group id is
    # never reused while the group has members, so this reaches no other process.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (alive(pid, ident) or _group_alive(pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


class Record:
    """.demo/local-<pattern>-<runner pid>.json: the runner, the processes it started (in
    start order) and its temporary directories. Rewritten whole at every change."""

    def __init__(self, pattern: str, state_dir: Path | None = None) -> None:
        self.path = (state_dir or STATE_DIR) / f"local-{pattern}-{os.getpid()}.json"
        self.data: dict[str, Any] = {
            "pattern": pattern,
            "runner": {"pid": os.getpid(), "identity": identity(os.getpid())},
            "processes": [],
            "directories": [],
        }

    def add_process(self, name: str, pid: int) -> None:
        self.data["processes"].append({"name": name, "pid": pid, "identity": identity(pid)})
        self._save()

    def remove_process(self, pid: int) -> None:
        self.data["processes"] = [p for p in self.data["processes"] if p["pid"] != pid]
        self._save()

    def add_directory(self, path: Path) -> None:
        self.data["directories"].append(str(path))
        self._save()

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(self.data, indent=2))
        partial.replace(self.path)


def _removable(directory: Path) -> bool:
    """Only a directory named like the demo's own temporary ones, whatever a record says."""
    return directory.name.startswith(TEMP_PREFIX) and not directory.is_symlink()


def remove_directory(directory: Path) -> None:
    if _removable(directory):
        shutil.rmtree(directory, ignore_errors=True)


def clean(state_dir: Path | None = None, runner_timeout: float = 90.0) -> int:
    """For `make demo-clean`: stop what local demos left (a running one is asked to stop
    with SIGTERM and tears itself down), remove their temporary directories and records.
    Returns how many records it handled."""
    records = sorted((state_dir or STATE_DIR).glob("local-*.json"))
    for path in records:
        try:
            data = json.loads(path.read_text())
            pattern, runner = str(data["pattern"]), data["runner"]
            processes, directories = list(data["processes"]), list(data["directories"])
        except (OSError, ValueError, KeyError, TypeError):
            say(f"{path}: unreadable, removed")
            path.unlink(missing_ok=True)
            continue
        if int(runner["pid"]) != os.getpid() and alive(int(runner["pid"]), runner["identity"]):
            say(f"the local {pattern} demo is running (pid {runner['pid']}): stopping it")
            stop_runner(int(runner["pid"]), runner["identity"], runner_timeout)
        for entry in reversed(processes):
            if stop_group(int(entry["pid"]), entry["identity"]):
                say(f"stopped {entry['name']} (pid {entry['pid']}), left by a local "
                    f"{pattern} demo")
        for directory in directories:
            if Path(directory).exists():
                remove_directory(Path(directory))
                say(f"removed {directory}")
        path.unlink(missing_ok=True)
    return len(records)


def stop_runner(pid: int, ident: str | None, timeout: float) -> None:
    """SIGTERM to a demo's runner (it tears down what it started itself), SIGKILL after
    `timeout`; what it could not stop is then the caller's."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid, ident) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid, ident):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def record_played(runtime: str, pattern: str, state_dir: Path | None = None) -> None:
    """A demo is about to start `pattern` on `runtime` (podman): `make demo-clean` with this
    state directory removes it."""
    directory = state_dir or STATE_DIR
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{runtime}-{pattern}.played").touch()


def played(runtime: str, state_dir: Path | None = None) -> list[str]:
    """The patterns demos of this state directory started on `runtime`."""
    suffix = ".played"
    return sorted(path.name[len(runtime) + 1:-len(suffix)]
                  for path in (state_dir or STATE_DIR).glob(f"{runtime}-*{suffix}"))


def forget_played(runtime: str, pattern: str, state_dir: Path | None = None) -> None:
    ((state_dir or STATE_DIR) / f"{runtime}-{pattern}.played").unlink(missing_ok=True)
