"""Worker processes beyond the first: the first process (the one with the admin server)
serves as worker 0 and starts PROXY_WORKERS - 1 more, each `python -m
patterns.security.tls_proxy.worker` with the same environment, its index, and the shared
counters' memfd. Every worker binds the TLS port itself (SO_REUSEPORT) and reloads the
certificate itself. A worker that dies is started again (and logged); a worker whose
parent is gone stops."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

from .certs import EXPIRY_GUARD
from .config import Config
from .counters import SharedCounters

log = logging.getLogger(__name__)

WORKER_MODULE = "patterns.security.tls_proxy.worker"
ENV_INDEX = "PROXY_WORKER_INDEX"
ENV_COUNTERS_FD = "PROXY_WORKER_COUNTERS_FD"
ENV_WORKERS = "PROXY_WORKER_COUNT"


class Workers:
    def __init__(self, config: Config, counters: SharedCounters) -> None:
        self.config = config
        self.counters = counters
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.restarts = 0
        self.stopping = False

    def _spawn(self, index: int) -> None:
        env = {**os.environ, ENV_INDEX: str(index), ENV_COUNTERS_FD: str(self.counters.fd),
               ENV_WORKERS: str(self.config.workers)}  # fmt: skip
        self.counters.row(index).set("alive", 0)
        self.procs[index] = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE], env=env, pass_fds=(self.counters.fd,))

    def start(self) -> None:
        for index in range(1, self.config.workers):
            self._spawn(index)

    def check(self) -> None:
        """Start again any worker that exited (called from worker 0's loop)."""
        if self.stopping:
            return
        for index, proc in list(self.procs.items()):
            code = proc.poll()
            if code is not None:
                self.restarts += 1
                log.error("worker exited, starting it again",
                          extra={"worker": index, "exit_code": code})  # fmt: skip
                self._spawn(index)

    def alive(self) -> tuple[bool, str]:
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """Every worker is up and serves a certificate (its notAfter is set)."""
        now = time.time()
        down = [i for i, proc in self.procs.items()
                if proc.poll() is not None or self.counters.row(i).get("alive") != 1
                or self.counters.row(i).get("not_after") - EXPIRY_GUARD <= now]  # fmt: skip
        if down:
            return False, f"workers not serving yet: {sorted(down)}"
        return True, "ok"

    def stop(self) -> None:
        self.stopping = True
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + self.config.drain_timeout + 5
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
