"""`make demo-pod` on local processes (demo/pod.py through the real runner,
demo/__main__.py): the two services of lab 0 started as a pod would start them, each
shared thing shown and checked, and a verdict only about the processes it started.

The demo runs on free ports (its PORTS, patched as the runner's tests patch the stand-in's)
with its records and temporary directory in the test's own directories."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from demo import processes
from tests.conftest import ROOT, free_port


def runner_script(state_dir: Path, ports: dict[str, int]) -> str:
    return f"""
import sys
from pathlib import Path

import demo.__main__ as runner
import demo.processes
from demo import pod

demo.processes.STATE_DIR = Path({str(state_dir)!r})
pod.PORTS.update({ports!r})
if "pod" not in runner.PATTERNS:
    runner.PATTERNS = (*runner.PATTERNS, "pod")
sys.exit(runner.main(["pod", "--runtime", "local"]))
"""


def test_the_local_pod_demo_checks_each_shared_thing_and_leaves_nothing_running(
        tmp_path: Path) -> None:
    state_dir, tmp = tmp_path / "state", tmp_path / "tmp"
    tmp.mkdir()
    ports = {"app": free_port(), "sidecar": free_port()}
    run = subprocess.run(
        [sys.executable, "-c", runner_script(state_dir, ports)], cwd=ROOT, text=True,
        capture_output=True, timeout=180,
        env={**os.environ, "TMPDIR": str(tmp), "DEMO_SECONDS": "0.5", "PYTHONUNBUFFERED": "1"})
    said = run.stdout + run.stderr
    try:
        assert run.returncode == 0, said
        # The same inode, as each process holds the file open.
        inodes = re.findall(r"(main|sidecar)\s+sees \S+ as inode (\d+)", run.stdout)
        assert [name for name, _ in inodes] == ["main", "sidecar"], said
        assert inodes[0][1] == inodes[1][1], said
        assert re.search(r"the sidecar reads main's line: .*GET /written-by-main-read-by-"
                         r"sidecar-\w+ HTTP/1.1", run.stdout), said
        assert f"http://localhost:{ports['app']}/healthz (main) answers 'ok'" in run.stdout, said
        assert "restarts after: {'main': 1, 'sidecar': 0}" in run.stdout, said
        verdict = [line for line in run.stdout.splitlines() if "verdict (local)" in line]
        assert len(verdict) == 1, said
        assert f"one file (inode {inodes[0][1]}) seen by both containers" in verdict[0]
        assert "main restarted alone (restarts: main 1, sidecar 0)" in verdict[0]
        lines = re.search(r"the sidecar read all (\d+) of its lines", verdict[0])
        assert lines and int(lines.group(1)) > 0, verdict
        # Every process it started is stopped: none is left in its record.
        records = list(state_dir.glob("local-pod-*.json"))
        assert len(records) == 1, records
        record = json.loads(records[0].read_text())
        assert record["processes"] == [], record
    finally:
        processes.clean(state_dir)
    assert not list(tmp.glob("podpatterns-pod-*")), "make demo-clean removes its directory"
