"""The collector's record store on a real directory: every record becomes one valid JSON
line that reads back whatever msgpack allowed into it, a restart rebuilds counts, a
crash's partial line is cut, tag counts are bounded, and retention keeps the files under
their limits and says what it dropped."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from patterns.common.forward.protocol import ProtocolError
from patterns.sidecar.collector.store import RecordStore, TagCounts, encode_lines

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
        assert reopened.counts()["tags"] == {"a": 2, "b": 1}
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
        assert store.counts()["tags"] == {"ok": 2}
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


def run_appends(store: RecordStore, requests: list[tuple[str, list]]) -> None:
    async def write() -> None:
        for tag, events in requests:
            await store.append(tag, events)

    asyncio.run(write())


def test_invalid_utf8_is_stored_readable_and_counts_survive_a_restart(tmp_path: Path) -> None:
    # What the Forward decoder makes of invalid UTF-8: the bytes kept as lone surrogates.
    bad_value = {"log": "ok \udcff\udcfe end"}
    bad_key = {"k\udcff": 1}
    store = RecordStore(tmp_path)
    store.open()
    run_appends(store, [("app", [(1.0, {"log": "fine"}), (2.0, bad_value), (3.0, bad_key)])])
    assert [r["record"] for r in store.recent("app", 10)] == [
        {"log": "fine"},
        {"log": "ok \ufffd\ufffd end"},
        {"k\ufffd": 1},
    ]
    store.close()
    reopened = RecordStore(tmp_path)
    reopened.open()
    try:
        assert reopened.counts()["tags"] == {"app": 3}
        assert len(reopened.recent(None, 10)) == 3
    finally:
        reopened.close()


def test_lines_stored_with_lone_surrogate_escapes_still_read_back(tmp_path: Path) -> None:
    # What the collector wrote before invalid UTF-8 was replaced on the way in.
    segment = tmp_path / "records-000001.jsonl"
    segment.write_bytes(
        b'{"tag":"app","time":1.0,"record":{"log":"a"}}\n'
        b'{"tag":"app","time":2.0,"record":{"log":"b\\udcff"}}\n'
    )
    store = RecordStore(tmp_path)
    store.open()
    try:
        assert store.counts()["tags"] == {"app": 2}
        assert [r["record"]["log"] for r in store.recent(None, 10)] == ["a", "b\ufffd"]
    finally:
        store.close()


def test_tag_counts_are_bounded_and_frequent_tags_stay() -> None:
    counts = TagCounts(limit=10)
    for i in range(5):
        counts.add(f"busy-{i}", 1000)
    for i in range(10_000):  # a client sending a new tag each time
        counts.add(f"junk-{i}", 1)
        counts.add(f"busy-{i % 5}", 1)
    assert len(counts.tags) == 10
    assert counts.total == 5 * 1000 + 10_000 + 10_000
    assert all(counts.tags[f"busy-{i}"] == 1000 + 2000 for i in range(5))
    assert counts.other == counts.total - sum(counts.tags.values())
    assert not counts.complete
    restored = TagCounts.from_json(json.loads(json.dumps(counts.to_json())), 10)
    assert restored is not None and restored.tags == counts.tags
    assert restored.total == counts.total and not restored.complete


def test_the_counts_view_lists_the_top_tags_and_sums_the_rest(tmp_path: Path) -> None:
    store = RecordStore(tmp_path, fsync=False, max_tags=50)
    store.open()
    try:
        run_appends(store, [(f"tag-{i}", [(1.0, {})] * (i + 1)) for i in range(200)])
        view = store.counts(top=5)
        assert view["tags"] == {f"tag-{i}": i + 1 for i in range(195, 200)}
        assert view["total"] == sum(range(1, 201))
        assert view["other"] == view["total"] - sum(view["tags"].values())
        assert view["distinct_tags"] == 50
    finally:
        store.close()


def segment_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("records-*.jsonl"))


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def test_retention_by_size_keeps_the_store_under_its_limit_and_says_what_it_dropped(
    tmp_path: Path,
) -> None:
    dropped: list[tuple[int, int, int, str]] = []
    store = RecordStore(
        tmp_path, fsync=False, segment_bytes=64 * 1024, retention_bytes=256 * 1024, recent=10
    )
    store.on_dropped.append(lambda *args: dropped.append(args))
    store.open()
    record = {"log": "x" * 1000}
    try:
        for i in range(400):  # ~430 KB of lines in all
            run_appends(store, [("app", [(float(i), {**record, "i": i})])])
            assert disk_bytes(tmp_path) <= 256 * 1024
        assert dropped and {reason for *_, reason in dropped} == {"size"}
        gone = store.dropped()
        assert gone.segments == len(dropped) and gone.records == sum(d[1] for d in dropped)
        assert gone.bytes == sum(d[2] for d in dropped)
        # What is left is the newest, readable, and whole from some record on.
        kept = [json.loads(line)["record"]["i"] for name in segment_files(tmp_path)
                for line in (tmp_path / name).read_text().splitlines()]
        assert kept == list(range(400 - len(kept), 400)) and len(kept) + gone.records == 400
        assert [r["record"]["i"] for r in store.recent(None, 3)] == [397, 398, 399]
        assert store.counts()["total"] == 400  # every record ever stored, dropped ones too
    finally:
        store.close()
    reopened = RecordStore(tmp_path, segment_bytes=64 * 1024, retention_bytes=256 * 1024)
    reopened.open()
    try:
        assert reopened.counts()["tags"] == {"app": 400}
        assert reopened.dropped() == gone
    finally:
        reopened.close()


def test_retention_by_age_drops_old_segments_even_when_nothing_is_written(
    tmp_path: Path,
) -> None:
    dropped: list[tuple[int, int, int, str]] = []
    store = RecordStore(tmp_path, fsync=False, retention_seconds=0.4)
    store.on_dropped.append(lambda *args: dropped.append(args))
    store.open()
    try:
        run_appends(store, [("old", [(1.0, {"i": 1}), (2.0, {"i": 2})])])
        deadline = time.monotonic() + 10
        while not dropped and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dropped == [(1, 2, dropped[0][2], "age")]
        assert segment_files(tmp_path) == ["records-000002.jsonl"]
        assert store.recent("old", 10) == [] and store.counts()["total"] == 2
        run_appends(store, [("new", [(3.0, {"i": 3})])])
        assert [r["record"]["i"] for r in store.recent("new", 10)] == [3]
    finally:
        store.close()
