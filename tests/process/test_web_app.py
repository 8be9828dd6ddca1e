"""The web-app as its image runs it: the `web-app` console script serving under gunicorn,
and `web-app batch` (the Job's main container)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port, http_ok, wait_until

SEQ = re.compile(r" seq=(\d+)$")


def console_script() -> str:
    script = Path(sys.executable).with_name("web-app")
    if not script.exists():
        pytest.skip("needs the web-app console script: pip install -e '.[web]'")
    return str(script)


def sequences_on_disk(log_dir: Path) -> list[int]:
    backups = sorted(log_dir.glob("access.log.*"), key=lambda p: -int(p.suffix[1:]))
    numbers = []
    for path in [*backups, log_dir / "access.log"]:
        for line in path.read_text().splitlines():
            match = SEQ.search(line)
            assert match, f"line without a sequence number in {path.name}: {line!r}"
            numbers.append(int(match.group(1)))
    return numbers


class WebApp:
    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [console_script(), *args],
            env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def web_app(tmp_path: Path) -> Iterator:
    started: list[WebApp] = []

    def start(env: Mapping[str, str], *args: str) -> WebApp:
        app = WebApp(list(args), env, tmp_path / f"web-app-{len(started)}.log")
        started.append(app)
        return app

    yield start
    for app in started:
        if app.proc.poll() is None:
            print(app.output())  # shown when the test failed
        app.close()


def test_serves_writes_rotates_and_exits_0_on_sigterm(web_app, tmp_path):
    port = free_port()
    log_dir = tmp_path / "logs"
    app = web_app(
        {
            "WEB_APP_HOST": "127.0.0.1",
            "WEB_APP_PORT": str(port),
            "WEB_APP_LOG_DIR": str(log_dir),
            "WEB_APP_LOG_MAX_BYTES": "16384",
        }
    )
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{base}/readyz"), timeout=15, what="web-app ready")

    assert "sidecar" in requests.get(f"{base}/", timeout=5).text
    burst = requests.get(f"{base}/traffic?n=1000", timeout=10).json()
    assert burst["written"] == 1000
    assert requests.get(f"{base}/traffic?n=nope", timeout=5).status_code == 400
    metrics = requests.get(f"{base}/metrics", timeout=5).text
    rotations = re.search(r"^web_app_log_rotations_total (\S+)$", metrics, re.M)
    assert rotations is not None and float(rotations.group(1)) >= 5  # ~100 KB, 16 KiB files

    app.proc.send_signal(signal.SIGTERM)
    assert app.wait(timeout=20) == 0

    # /readyz probes, the page, the burst, the 400 and the /metrics scrape: all on disk,
    # numbered without a gap or a repeat.
    numbers = sequences_on_disk(log_dir)
    assert numbers == list(range(1, len(numbers) + 1))
    assert burst["last_seq"] < numbers[-1]
    # gunicorn's own messages and the app's diagnostics are JSON lines on stdout.
    events = [json.loads(line) for line in app.output().splitlines()]
    messages = [event["message"] for event in events]
    assert "access log rotated" in messages
    assert any(m.startswith("Shutting down") for m in messages)
    assert {event["service"] for event in events} == {"web-app"}


def test_runs_exactly_one_worker_process(web_app, tmp_path):
    port = free_port()
    app = web_app(
        {
            "WEB_APP_HOST": "127.0.0.1",
            "WEB_APP_PORT": str(port),
            "WEB_APP_LOG_DIR": str(tmp_path / "logs"),
        }
    )
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=15, what="web-app")

    children = Path(f"/proc/{app.proc.pid}/task/{app.proc.pid}/children").read_text().split()

    # RotatingFileHandler is not safe across processes: a second worker would lose lines.
    assert len(children) == 1
    app.proc.send_signal(signal.SIGTERM)
    assert app.wait(timeout=20) == 0


def test_a_restarted_server_continues_the_numbering(web_app, tmp_path):
    log_dir = tmp_path / "logs"
    for _ in range(2):
        port = free_port()
        app = web_app(
            {
                "WEB_APP_HOST": "127.0.0.1",
                "WEB_APP_PORT": str(port),
                "WEB_APP_LOG_DIR": str(log_dir),
            }
        )
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda base=base: http_ok(f"{base}/healthz"), timeout=15, what="web-app")
        requests.get(f"{base}/traffic?n=100", timeout=5)
        app.proc.send_signal(signal.SIGTERM)
        assert app.wait(timeout=20) == 0

    numbers = sequences_on_disk(log_dir)
    assert numbers == list(range(1, len(numbers) + 1))
    assert len(numbers) > 200


def test_bad_configuration_exits_2_naming_the_variables(tmp_path):
    result = subprocess.run(
        [console_script()],
        env={
            "PATH": "/usr/bin:/bin",
            "WEB_APP_PORT": "web",
            "WEB_APP_LOG_BACKUPS": "0",
            "WEB_APP_LOG_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "WEB_APP_PORT='web': expected an integer" in result.stderr
    assert "WEB_APP_LOG_BACKUPS='0'" in result.stderr


def test_an_unusable_log_dir_exits_2_at_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = subprocess.run(
        [console_script()],
        env={"PATH": "/usr/bin:/bin", "WEB_APP_LOG_DIR": str(blocker / "logs")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "WEB_APP_LOG_DIR=" in result.stderr


def test_batch_writes_every_line_across_rotations_and_exits_0(web_app, tmp_path):
    log_dir = tmp_path / "logs"
    batch = web_app(
        {
            "WEB_APP_LOG_DIR": str(log_dir),
            "WEB_APP_LOG_MAX_BYTES": "65536",
            "WEB_APP_LOG_BACKUPS": "20",
        },
        "batch",
        "--lines",
        "5000",
        "--rate",
        "0",
    )

    assert batch.wait(timeout=30) == 0
    assert sequences_on_disk(log_dir) == list(range(1, 5001))
    assert len(list(log_dir.glob("access.log.*"))) >= 5
    assert '"message": "batch finished"' in batch.output()


def test_batch_stops_promptly_on_sigterm_with_what_it_wrote_intact(web_app, tmp_path):
    log_dir = tmp_path / "logs"
    batch = web_app(
        {"WEB_APP_LOG_DIR": str(log_dir)}, "batch", "--lines", "1000000", "--rate", "500"
    )
    wait_until(lambda: (log_dir / "access.log").exists()
               and (log_dir / "access.log").read_bytes().count(b"\n") >= 100,
               timeout=15, what="100 lines written")

    started = time.monotonic()
    batch.proc.send_signal(signal.SIGTERM)

    assert batch.wait(timeout=10) == 128 + signal.SIGTERM  # not all lines: not a success
    assert time.monotonic() - started < 3
    numbers = sequences_on_disk(log_dir)
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 100
