"""The collector's record store on a real directory: every record becomes one valid JSON
line whatever msgpack allowed into it, a restart rebuilds counts, and a crash's partial
line is cut."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from patterns.common.forward.protocol import ProtocolError
from patterns.sidecar.collector.store import RecordStore, encode_lines

AWKWARD = {
    "bytes value": {"a": b"\xff\xfe"},
    "bytes key": {b"k": 1},
    "nested bytes key": {"x": {b"n": [b"v", (1, 2)]}},
    "integer key": {5: None},
    "beyond 64 bits": {"big": 2**70},
    "undecodable text": {"s": "ok\udcff"},
    "not a number": {"f": float("nan"), "g": [float("inf")]},
}


@pytest.mark.parametrize("record", list(AWKWARD.values()), ids=list(AWKWARD))
def test_every_record_becomes_one_valid_json_line(record: dict) -> None:
    [line] = encode_lines("tag.a", [(1700000000.25, record)])
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    parsed = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert parsed["tag"] == "tag.a" and parsed["time"] == 1700000000.25
    assert isinstance(parsed["record"], dict)


def test_plain_records_are_stored_as_they_came() -> None:
    record = {"log": "GET / 200 \u00e9", "n": 3, "nested": {"ok": [1, "two", None, True]}}
    [line] = encode_lines("web", [(1.5, record)])
    assert json.loads(line) == {"tag": "web", "time": 1.5, "record": record}


def test_restart_rebuilds_counts_and_cuts_a_partial_line(tmp_path: Path) -> None:
    async def write(store: RecordStore) -> None:
        await store.append("a", [(1.0, {"i": 1}), (2.0, {"i": 2})])
        await store.append("b", [(3.0, {"i": 3})])

    store = RecordStore(tmp_path, recent=10)
    store.open()
    asyncio.run(write(store))
    store.close()
    [segment] = tmp_path.glob("records-*.jsonl")
    with open(segment, "ab") as handle:
        handle.write(b'{"tag":"a","time":4.0,"rec')  # a crash mid-write

    reopened = RecordStore(tmp_path, recent=10)
    reopened.open()
    try:
        assert reopened.counts() == {"a": 2, "b": 1}
        assert [r["record"]["i"] for r in reopened.recent(None, 10)] == [1, 2, 3]
        assert [r["record"]["i"] for r in reopened.recent("a", 1)] == [2]
        assert segment.read_bytes().endswith(b"}\n")
    finally:
        reopened.close()


def test_a_record_too_deep_for_json_fails_only_its_own_request(tmp_path: Path) -> None:
    deep: dict = {"end": True}
    for _ in range(1020):
        deep = {"a": deep}

    async def write(store: RecordStore) -> list[object]:
        return await asyncio.gather(
            store.append("ok", [(1.0, {"i": 1})]),
            store.append("deep", [(2.0, deep)]),
            store.append("ok", [(3.0, {"i": 3})]),
            return_exceptions=True,
        )

    store = RecordStore(tmp_path)
    store.open()
    try:
        first, failed, last = asyncio.run(write(store))
        assert first is None and last is None
        assert isinstance(failed, ProtocolError) and failed.reason == "bad_record"
        assert store.counts() == {"ok": 2}
    finally:
        store.close()


def test_the_recent_view_is_bounded_in_bytes_and_older_records_come_from_the_files(
    tmp_path: Path,
) -> None:
    big = "x" * 100_000  # a client decides how large a record is

    async def write(store: RecordStore) -> None:
        for i in range(50):
            await store.append("big", [(float(i), {"i": i, "pad": big})])

    store = RecordStore(tmp_path, recent=1000, recent_bytes=1024 * 1024)
    store.open()
    try:
        asyncio.run(write(store))
        assert store._recent_size <= 1024 * 1024 and len(store._recent) < 50
        assert [r["record"]["i"] for r in store.recent(None, 30)] == list(range(20, 50))
        assert [r["record"]["i"] for r in store.recent("big", 50)] == list(range(50))
    finally:
        store.close()
