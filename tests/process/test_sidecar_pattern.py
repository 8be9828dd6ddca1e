"""The sidecar pattern end to end as real processes, the way the pods run it: web-app
writes its numbered access log into a shared directory, log-shipper follows it and ships to
log-collector. The check is the one the lab guide teaches: every sequence number the app
wrote is in the collector's data files exactly once."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from patterns.common.follower.checkpoints import CheckpointStore
from tests.conftest import ROOT, free_port, http_ok, wait_until

SEQ = re.compile(r" seq=(\d+)$")
TAG = "app.access"


@dataclass
class Pod:
    """A collector, a shipper and the directory they share with the app."""

    start: Callable[..., Any]
    shipper_env: dict[str, str]
    collector_http: int
    data_dir: Path
    log_dir: Path
    shipper: Any = None

    def start_shipper(self) -> Any:
        self.shipper = self.start("patterns.sidecar.shipper", self.shipper_env, "shipper")
        admin = f"http://127.0.0.1:{self.shipper_env['SHIPPER_HTTP_PORT']}/readyz"
        wait_until(lambda: http_ok(admin), timeout=15, what="shipper ready")
        return self.shipper

    def checkpointed_everything(self) -> bool:
        """The shipper's saved checkpoints cover every byte of every file they name: what
        a restart resumes from. (The collector counts a line before the shipper has its
        ack and saves the checkpoint, so the collector's count alone says less.)"""
        checkpoints = CheckpointStore(self.shipper_env["SHIPPER_STATE_DIR"]).load()
        if not checkpoints:
            return False
        for checkpoint in checkpoints:
            try:
                if checkpoint.offset < Path(checkpoint.path).stat().st_size:
                    return False
            except FileNotFoundError:
                continue
        return True

    def count(self) -> int:
        counts = requests.get(f"http://127.0.0.1:{self.collector_http}/api/counts", timeout=5)
        return int(counts.json()["tags"].get(TAG, 0))

    def shipped_sequences(self) -> list[int]:
        """Sequence numbers in the collector's data files, in the order they were stored."""
        numbers = []
        for path in sorted(self.data_dir.glob("records-*.jsonl")):
            for line in path.read_text().splitlines():
                record = json.loads(line)
                if record["tag"] == TAG:
                    match = SEQ.search(record["record"]["log"])
                    assert match, record
                    numbers.append(int(match.group(1)))
        return numbers


@pytest.fixture
def pod(service, tmp_path: Path) -> Pod:
    forward, collector_http = free_port(), free_port()
    data_dir = tmp_path / "collector-data"
    service(
        "patterns.sidecar.collector",
        {
            "COLLECTOR_FORWARD_HOST": "127.0.0.1",
            "COLLECTOR_FORWARD_PORT": str(forward),
            "COLLECTOR_HTTP_HOST": "127.0.0.1",
            "COLLECTOR_HTTP_PORT": str(collector_http),
            "COLLECTOR_DATA_DIR": str(data_dir),
            "COLLECTOR_FSYNC": "false",
        },
    )
    wait_until(
        lambda: http_ok(f"http://127.0.0.1:{collector_http}/readyz"),
        timeout=15,
        what="collector ready",
    )
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    shipper_env = {
        "SHIPPER_PATHS": f"{log_dir}/*.log",
        "SHIPPER_STATE_DIR": str(tmp_path / "state"),
        "FLUENT_TAG": TAG,
        "SHIPPER_HTTP_HOST": "127.0.0.1",
        "SHIPPER_HTTP_PORT": str(free_port()),
        "FLUENT_HOST": "127.0.0.1",
        "FLUENT_PORT": str(forward),
    }
    return Pod(service, shipper_env, collector_http, data_dir, log_dir)


@pytest.fixture
def web_app(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """The web-app console script (the image's ENTRYPOINT) as a process."""
    script = Path(sys.executable).with_name("web-app")
    if not script.exists():
        pytest.skip("needs the web-app console script: pip install -e '.[web]'")
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"web-app-{len(started)}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [str(script), *args],
            env={"PATH": "/usr/bin:/bin", **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()  # the child has its own copy
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_job_main_exits_then_the_sidecar_ships_everything_and_exits_0(pod, web_app):
    """The native-sidecar Job: main writes and exits; the sidecar, stopped afterwards with
    SIGTERM, still ships every line across all rotations before it exits."""
    shipper = pod.start_shipper()
    batch = web_app(
        {
            "WEB_APP_LOG_DIR": str(pod.log_dir),
            "WEB_APP_LOG_MAX_BYTES": "65536",
            "WEB_APP_LOG_BACKUPS": "50",
        },
        "batch",
        "--lines",
        "5000",
        "--rate",
        "0",
    )
    assert batch.wait(timeout=60) == 0
    assert len(list(pod.log_dir.glob("access.log.*"))) >= 5  # rotated several times

    shipper.signal(signal.SIGTERM)  # what the kubelet does once main has exited

    assert shipper.wait(timeout=30) == 0
    assert pod.shipped_sequences() == list(range(1, 5001))


def test_a_restarted_shipper_resumes_without_loss_or_duplicates(pod, web_app):
    shipper = pod.start_shipper()
    port = free_port()
    app = web_app(
        {
            "WEB_APP_HOST": "127.0.0.1",
            "WEB_APP_PORT": str(port),
            "WEB_APP_LOG_DIR": str(pod.log_dir),
            "WEB_APP_LOG_MAX_BYTES": "65536",
        }
    )
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{base}/readyz"), timeout=15, what="web-app ready")
    requests.get(f"{base}/traffic?n=1500", timeout=10)
    written = requests.get(f"{base}/api/stats", timeout=5).json()["last_seq"] + 1  # + its line
    # Everything acked and checkpointed before the crash: a batch in flight at a SIGKILL may
    # be sent again (at-least-once, see the shipper's README), which is not what this test
    # is about.
    wait_until(lambda: pod.count() >= written, timeout=15, what="first lines shipped")
    wait_until(pod.checkpointed_everything, timeout=15, what="checkpoints saved")

    shipper.kill()  # SIGKILL: no chance to save anything on the way out
    requests.get(f"{base}/traffic?n=400", timeout=10)  # written while it is down
    pod.start_shipper()
    requests.get(f"{base}/traffic?n=400", timeout=10)
    last = requests.get(f"{base}/api/stats", timeout=5).json()["last_seq"]
    wait_until(lambda: pod.count() >= last, timeout=20, what="collector caught up")

    app.send_signal(signal.SIGTERM)
    assert app.wait(timeout=20) == 0
    shipped = pod.shipped_sequences()
    assert sorted(shipped) == list(range(1, len(shipped) + 1))  # no gap, no duplicate
    assert shipped[-1] >= last


def test_a_shipper_down_across_several_rotations_ships_the_files_in_between(pod, web_app):
    shipper = pod.start_shipper()
    app_env = {
        "WEB_APP_LOG_DIR": str(pod.log_dir),
        "WEB_APP_LOG_MAX_BYTES": "16384",
        "WEB_APP_LOG_BACKUPS": "50",
    }
    assert web_app(app_env, "batch", "--lines", "100", "--rate", "0").wait(timeout=30) == 0
    wait_until(lambda: pod.count() >= 100, timeout=15, what="first lines shipped")

    shipper.kill()
    # ~1000 lines of ~100 bytes through 16 KiB files: about six rotations while it is down.
    assert web_app(app_env, "batch", "--lines", "1000", "--rate", "0").wait(timeout=30) == 0
    shipper = pod.start_shipper()
    shipper.signal(signal.SIGTERM)
    assert shipper.wait(timeout=30) == 0

    assert sorted(pod.shipped_sequences()) == list(range(1, 1101))
