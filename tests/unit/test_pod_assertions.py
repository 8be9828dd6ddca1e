"""tests/pod_assertions.py checks what the kind and podman tiers promise with the same code;
here its collector check runs against this machine, its in-pod snippets run as local
processes: the app's log files in a directory, the collector's /api/counts on loopback.

The kind tier's check compared the app's lines with the collector's total, which also
counts the classic variant's and the Job's 20,000 lines: it could not fail. The check
compares the native sidecar's own tag."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pod_assertions as check

TAG = "app.access"


def local_exec(*argv: str) -> tuple[int, str]:
    """An Exec (tests/pod_assertions.py) that runs the command on this machine."""
    command = [sys.executable, *argv[1:]] if argv[0] == "python3" else list(argv)
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if result.returncode == 0:
        return 0, result.stdout
    return result.returncode, result.stdout + result.stderr


@pytest.fixture
def collector() -> Iterator[dict]:
    """A collector's /api/counts on loopback, serving the tags the test sets; yields them
    and its URL under the key "url"."""
    counts: dict = {}

    class Counts(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            tags = {k: v for k, v in counts.items() if k != "url"}
            body = json.dumps({"tags": tags, "total": sum(tags.values())}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counts)
    counts["url"] = f"http://127.0.0.1:{server.server_address[1]}/api/counts"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield counts
    server.shutdown()
    server.server_close()


@pytest.fixture
def app_logs(tmp_path: Path) -> str:
    """200 lines in access.log and its rotated copy; returns the glob of both."""
    (tmp_path / "access.log.1").write_text("line\n" * 120)
    (tmp_path / "access.log").write_text("line\n" * 80)
    return str(tmp_path / "access.log*")


def collected_once(app_logs: str, counts: dict, at_least: int = 200) -> bool:
    return check.every_line_collected_once(local_exec, app_logs, local_exec, counts["url"],
                                           TAG, at_least)


def test_lines_lost_are_seen_though_other_shippers_fill_the_total(app_logs, collector) -> None:
    collector.update({TAG: 150, "app.access.classic": 350, "batch": 20000})
    assert not collected_once(app_logs, collector)


def test_every_line_once_under_the_sidecars_own_tag(app_logs, collector) -> None:
    collector.update({TAG: 200, "app.access.classic": 350, "batch": 20000})
    assert collected_once(app_logs, collector)


def test_a_line_collected_twice_is_seen(app_logs, collector) -> None:
    collector.update({TAG: 201})
    assert not collected_once(app_logs, collector)


def test_fewer_lines_than_the_test_made_is_not_enough(app_logs, collector) -> None:
    collector.update({TAG: 200})
    assert not collected_once(app_logs, collector, at_least=201)
