"""What an app can grow in a sidecar by naming things: the adapter forgets a quiet file's
state (every file name ever written would otherwise stay in memory), and a log line that
names a file whose name is not UTF-8 is still one valid UTF-8 JSON line."""

from __future__ import annotations

import io
import json
import logging
import threading
from pathlib import Path

from patterns.adapter.log_adapter.adapter import Adapter
from patterns.adapter.log_adapter.config import load_config
from patterns.adapter.log_adapter.metrics import AdapterMetrics
from patterns.common.follower import Chunk
from patterns.common.jsonlog import JsonFormatter


class _Output:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def write(self, records: list[dict]) -> None:
        self.records.extend(records)

    def close(self) -> None:
        pass


class _Follower:
    """Stands in for the follower: the adapter only commits what it handled."""

    def __init__(self) -> None:
        self.committed: list[Chunk] = []

    def commit(self, chunk: Chunk) -> None:
        self.committed.append(chunk)

    def unread(self, path: str) -> bool:
        return False  # every file is read to its end


def test_the_adapter_forgets_a_quiet_file_after_emitting_what_it_held(tmp_path: Path) -> None:
    config = load_config({
        "ADAPTER_INPUTS": f"legacy={tmp_path}/*.log",
        "ADAPTER_STATE_DIR": str(tmp_path / "state"),
        "ADAPTER_MULTILINE_FLUSH_SECONDS": "1",
    })
    output = _Output()
    adapter = Adapter(config, AdapterMetrics([s.name for s in config.inputs]), output,
                      threading.Event())
    follower = _Follower()
    adapter.follower = follower  # type: ignore[assignment]
    names = 2_000
    for n in range(names):
        line = f"2026-11-25 12:00:00,000 ERROR [main] app: job {n} failed"
        adapter.handle(Chunk(f"{tmp_path}/job-{n}.log", [line], 0, len(line) + 1, None))
    assert len(adapter.files) == names  # each may still be assembling a record

    adapter.flush_quiet(float("inf"))
    assert adapter.files == {}
    assert len(output.records) == names, "every held record is emitted before forgetting"
    assert len(follower.committed) == names

    # A forgotten file that writes again gets a fresh decoder: nothing is lost.
    line = "2026-11-25 12:00:01,000 INFO [main] app: again"
    adapter.handle(Chunk(f"{tmp_path}/job-0.log", [line], 0, len(line) + 1, None))
    adapter.flush_quiet(float("inf"))
    assert "again" in str(output.records[-1]["body"])


def test_a_log_line_naming_a_file_that_is_not_utf8_is_valid_utf8_json() -> None:
    name = b"/var/log/app/\xff\xfe.log".decode("utf-8", "surrogateescape")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("test.jsonlog.surrogates")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("file refused", extra={"path": name, "city": "Zürich"})
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue()
    entry = json.loads(line.encode("utf-8"))  # strict: a lone surrogate fails to encode
    assert entry["path"] == "/var/log/app/\ufffd\ufffd.log"
    assert entry["city"] == "Zürich", "valid text is kept as it is"
