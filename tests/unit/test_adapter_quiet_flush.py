"""A multi-line record is flushed when its file is quiet, not when the adapter was only
busy elsewhere: with lines of the file still unread, the record may go on in them, and
flushing it would split it (its continuation lines rejected). Seen under load in
tests/process/test_adapter.py, where a big access log kept the reader away from the app
log for longer than ADAPTER_MULTILINE_FLUSH_SECONDS."""

from __future__ import annotations

import threading
from pathlib import Path

from patterns.adapter.log_adapter.adapter import Adapter
from patterns.adapter.log_adapter.config import load_config
from patterns.adapter.log_adapter.metrics import AdapterMetrics

HEADER = "2026-11-25 12:00:00,000 ERROR [main] shop.checkout - payment failed"
TRACE = [
    "Traceback (most recent call last):",
    '  File "shop.py", line 7, in checkout',
    "ValueError: card declined",
]
NEXT = "2026-11-25 12:00:01,000 INFO [main] shop.checkout - next order"


class _Output:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def write(self, records: list[dict]) -> None:
        self.records.extend(records)

    def close(self) -> None:
        pass


def test_a_record_waits_for_its_unread_lines_however_long_the_reader_was_away(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    log.write_text("\n".join([HEADER, *TRACE, NEXT]) + "\n")
    config = load_config({
        "ADAPTER_INPUTS": f"legacy={log}",
        "ADAPTER_STATE_DIR": str(tmp_path / "state"),
        "ADAPTER_INOTIFY": "false",
        "ADAPTER_MULTILINE_FLUSH_SECONDS": "0.2",
    })
    output = _Output()
    metrics = AdapterMetrics([s.name for s in config.inputs])
    adapter = Adapter(config, metrics, output, threading.Event())
    try:
        first = adapter.follower.read(timeout=5, max_lines=1)  # the header alone
        assert first is not None and first.lines == [HEADER]
        adapter.handle(first)
        adapter.flush_quiet(float("inf"))  # long past the quiet period: the reader was away
        assert output.records == [] and adapter.held_lines() == 1

        rest = adapter.follower.read(timeout=5)
        assert rest is not None and rest.lines == [*TRACE, NEXT]
        adapter.handle(rest)
        adapter.flush_quiet(float("inf"))  # now read to its end: the last record goes out
    finally:
        adapter.follower.close()

    assert [r["body"] for r in output.records] == [
        "\n".join(["payment failed", *TRACE]),
        "next order",
    ]
    assert output.records[0]["attributes"]["exception.type"] == "ValueError"
    assert metrics.lines[str(log)] == [5, 0], "every line parsed, none rejected"
