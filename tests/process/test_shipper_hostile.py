"""The log-shipper against what a hostile app container can plant in the shared volume:
links to the shipper's own secrets, FIFOs, file names that are not UTF-8. Real shipper,
real collector."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest

from tests.conftest import http_ok, wait_until
from tests.process.test_shipper import Collector, Shipper, assert_exactly_once, seq_line


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    directory = tmp_path / "logs"
    directory.mkdir()
    return directory


def stored_bytes(collector: Collector) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(collector.data_dir.rglob("*.jsonl")))


def refused(shipper: Shipper, reason: str) -> float | None:
    return shipper.metrics().get(f'shipper_files_refused_total{{reason="{reason}"}}')


def log_events(shipper: Shipper, message: str) -> list[dict]:
    events = []
    for line in shipper.proc.output().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("message") == message:
            events.append(event)
    return events


def test_a_link_to_proc_self_environ_never_ships_the_shared_key(service, tmp_path, logs):
    key = "k3y-" + secrets.token_hex(12)
    collector = Collector(service, tmp_path)
    collector.extra_env = {"COLLECTOR_SHARED_KEY": key}
    collector.start()
    (logs / "app.log").write_bytes(b"".join(seq_line(s) for s in range(100)))
    # Planted by the app: the shipper's own environment (FLUENT_SHARED_KEY) and a file
    # only the sidecar's user may read.
    (logs / "evil.log").symlink_to("/proc/self/environ")
    (logs / "shadow.log").symlink_to("/etc/shadow")
    shipper = Shipper(
        service,
        tmp_path,
        collector,
        str(logs / "*.log"),
        FLUENT_SHARED_KEY=key,
        SHIPPER_INOTIFY="false",  # every new file below is found by a full scan
        SHIPPER_POLL_SECONDS="0.05",
    ).start()
    collector.wait_for(100)
    # Files created later are found by later scans, each of which looks at the links again.
    for n in range(3):
        (logs / f"later{n}.log").write_bytes(seq_line(100 + n))
        collector.wait_for(101 + n)
    stored = stored_bytes(collector)
    assert key.encode() not in stored
    assert b"FLUENT_SHARED_KEY" not in stored
    assert refused(shipper, "symlink") == 2, "counted once per path, not at every scan"
    assert_exactly_once(collector, 103)
    assert {Path(r["file"]).name for r in collector.records()} == {
        "app.log",
        "later0.log",
        "later1.log",
        "later2.log",
    }
    refusals = log_events(shipper, "file refused")
    assert sorted((Path(e["path"]).name, e["reason"]) for e in refusals) == [
        ("evil.log", "symlink"),
        ("shadow.log", "symlink"),
    ], "each refusal logged once"
    assert shipper.proc.stop() == 0


def test_odd_names_and_special_files_do_not_stop_the_shipper(service, tmp_path, logs):
    collector = Collector(service, tmp_path).start()
    (logs / "app.log").write_bytes(b"".join(seq_line(s) for s in range(10)))
    with open(os.fsencode(logs) + b"/bad-\xff.log", "wb") as handle:  # not UTF-8
        handle.write(b"from a badly named file\n")
    (logs / "\x1b[31mred\x07.log").write_bytes(b"from a name with control characters\n")
    os.mkfifo(logs / "pipe.log")  # nobody writes: opening it for reading would block
    (logs / "dir.log").mkdir()
    shipper = Shipper(service, tmp_path, collector, str(logs / "*.log")).start()
    collector.wait_for(12)
    wait_until(lambda: refused(shipper, "not_regular") == 1, what="the FIFO refused")
    (logs / "app.log").open("ab").write(seq_line(10))  # still following
    collector.wait_for(13)
    files = {r["file"]: r["log"] for r in collector.records() if "app.log" not in r["file"]}
    assert files == {
        str(logs / "bad-\ufffd.log"): "from a badly named file",
        str(logs / "\x1b[31mred\x07.log"): "from a name with control characters",
    }
    assert shipper.proc.alive()
    assert http_ok(f"http://127.0.0.1:{shipper.http_port}/readyz")
    assert shipper.proc.stop() == 0
