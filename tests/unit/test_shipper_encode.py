"""The shipper's entry encoder and its configuration."""

from __future__ import annotations

import random

import msgpack
import pytest

from patterns.common.config import ConfigError
from patterns.common.forward import protocol
from patterns.sidecar.shipper.config import load_config
from patterns.sidecar.shipper.encode import (
    MAX_EVENTS_PER_REQUEST,
    MAX_REQUEST_BYTES,
    EntryEncoder,
    merge_requests,
)

LINES = ["plain", "", "é unicode ✓", "x" * 40, "y" * 300, "z" * 70_000, "nul \x00 byte", "\ufffd"]


def test_encoded_entries_are_byte_identical_to_the_reference_encoder():
    timestamp = 1_764_000_000.123456789
    path = "/var/log/app/app.log"
    fast = EntryEncoder().encode(LINES, path, timestamp)
    seconds = int(timestamp)
    reference = b"".join(
        protocol.encode_entry(seconds + (timestamp - seconds), {"log": line, "file": path})
        for line in LINES
    )
    assert fast == reference


def test_encoded_entries_decode_as_forward_events_with_event_time():
    timestamp = 1_764_000_000.5
    data = EntryEncoder().encode(LINES, "/a.log", timestamp)
    limits = protocol.Limits(max_frame_bytes=1 << 24, max_decompressed_bytes=1 << 24)
    events = protocol.decode_entries(data, limits)
    assert [record for _, record in events] == [{"log": line, "file": "/a.log"} for line in LINES]
    assert all(time == timestamp for time, _ in events)


def test_no_lines_encode_to_nothing():
    assert EntryEncoder().encode([], "/a.log", 1.0) == b""


def test_config_defaults():
    config = load_config({"SHIPPER_PATHS": "/var/log/app/*.log, /var/log/other.log"})
    assert config.paths == ["/var/log/app/*.log", "/var/log/other.log"]
    assert config.forward.tag == "app.logs"
    assert (config.forward.host, config.forward.port, config.admin_port) == (
        "127.0.0.1", 24224, 9102
    )
    assert str(config.state_dir) == "/var/lib/log-shipper"
    assert config.batch_bytes == 512 * 1024
    assert config.limits.max_line_bytes == 64 * 1024
    assert config.shutdown_timeout < 30, "must finish within Kubernetes' default grace period"
    assert config.forward.shared_key is None


def test_config_errors_name_every_bad_variable():
    with pytest.raises(ConfigError) as error:
        load_config(
            {"SHIPPER_BATCH_BYTES": "4 MiB", "FLUENT_PORT": "0", "SHIPPER_LONG_LINES": "drop"}
        )
    message = str(error.value)
    for name in ("SHIPPER_PATHS", "SHIPPER_BATCH_BYTES", "FLUENT_PORT", "SHIPPER_LONG_LINES"):
        assert name in message


def test_short_lines_are_split_into_requests_of_at_most_1_mib_on_the_wire():
    lines = [""] * 200_000  # 200,000 events from 195 KiB of file: ~9 MiB of entries
    path = "/var/log/app/" + "a" * 200 + ".log"  # the path is in every entry
    requests = EntryEncoder().requests(lines, path, 1_764_000_000.5)
    assert len(requests) > 1
    assert all(len(entries) <= MAX_REQUEST_BYTES for entries, _ in requests)
    assert all(count <= MAX_EVENTS_PER_REQUEST for _, count in requests)
    assert sum(count for _, count in requests) == len(lines)
    # Nothing lost or reordered at the cuts: together they are the one-request encoding.
    assert b"".join(e for e, _ in requests) == EntryEncoder().encode(lines, path, 1_764_000_000.5)
    limits = protocol.Limits(max_frame_bytes=2 << 20, max_entries=MAX_EVENTS_PER_REQUEST)
    for entries, count in requests:
        assert len(protocol.decode_entries(entries, limits)) == count


def test_requests_are_filled_up_to_the_limits():
    lines = [f"line {i:04d}" for i in range(1000)]
    entry = len(EntryEncoder().encode(lines[:1], "/a.log", 1.0))
    requests = EntryEncoder().requests(lines, "/a.log", 1.0, max_bytes=10 * entry + 5)
    assert [count for _, count in requests] == [10] * 100
    by_events = EntryEncoder().requests(lines, "/a.log", 1.0, max_events=300)
    assert [count for _, count in by_events] == [300, 300, 300, 100]
    assert EntryEncoder().requests(lines, "/a.log", 1.0) == [
        (EntryEncoder().encode(lines, "/a.log", 1.0), 1000)
    ]
    assert EntryEncoder().requests([], "/a.log", 1.0) == []


def test_the_largest_line_piece_fits_in_one_request():
    config = load_config({"SHIPPER_PATHS": "/x", "SHIPPER_MAX_LINE_BYTES": str(256 * 1024)})
    # Worst case: every byte invalid UTF-8 (a 3-byte U+FFFD each), a path of PATH_MAX.
    piece = "\ufffd" * config.limits.max_line_bytes
    [(entries, count)] = EntryEncoder().requests([piece], "/" + "p" * 4095, 1.0)
    assert count == 1 and len(entries) <= MAX_REQUEST_BYTES
    with pytest.raises(ConfigError, match="SHIPPER_MAX_LINE_BYTES"):
        load_config({"SHIPPER_PATHS": "/x", "SHIPPER_MAX_LINE_BYTES": str(256 * 1024 + 1)})


def test_requests_cut_greedily_for_any_mix_of_line_sizes():
    """Against the obvious loop: each request takes as many entries as fit in max_bytes
    and max_events, a single larger entry going alone; the requests concatenate to the
    lines in order."""
    rng = random.Random(7)
    encoder = EntryEncoder()
    framing = len(encoder.encode(["x"], "/a.log", 1.0)) - len(msgpack.packb("x"))
    for _ in range(200):
        lines = ["y" * rng.choice([0, 1, 5, 40, 300, 2000]) for _ in range(rng.randrange(1, 400))]
        max_bytes, max_events = rng.randrange(20, 20_000), rng.randrange(1, 60)
        expected, size, count = [], 0, 0
        for line in lines:
            entry = framing + len(msgpack.packb(line))
            if count and (size + entry > max_bytes or count >= max_events):
                expected.append(count)
                size = count = 0
            size, count = size + entry, count + 1
        expected.append(count)
        requests = encoder.requests(lines, "/a.log", 1.0, max_bytes=max_bytes,
                                    max_events=max_events)
        assert [n for _, n in requests] == expected
        assert b"".join(entries for entries, _ in requests) == encoder.encode(lines, "/a.log", 1.0)


def test_requests_of_many_files_under_one_tag_merge_within_the_limits():
    """A batch holds chunks of many files: their requests under one tag are joined into as
    few requests as fit, each entry keeping its own file, nothing lost or reordered."""
    encoder = EntryEncoder()
    files = [(f"/var/log/app/f{i:03d}.log", [f"{i:03d} line {n}" for n in range(50)])
             for i in range(40)]
    pieces = [piece for path, lines in files for piece in encoder.requests(lines, path, 1.0)]
    assert len(pieces) == 40  # one request per file, as a batch of one file each would be
    [(entries, count)] = merge_requests(pieces)
    assert count == 2000 and entries == b"".join(e for e, _ in pieces)
    limits = protocol.Limits(max_frame_bytes=2 << 20, max_entries=MAX_EVENTS_PER_REQUEST)
    assert [(r["file"], r["log"]) for _, r in protocol.decode_entries(entries, limits)] == [
        (path, line) for path, lines in files for line in lines
    ]
    one = len(pieces[0][0])  # every file's piece has the same size here
    by_bytes = merge_requests(pieces, max_bytes=3 * one + 1)
    assert [count for _, count in by_bytes] == [150] * 13 + [50]
    by_events = merge_requests(pieces, max_events=120)
    assert [count for _, count in by_events] == [100] * 20
    assert b"".join(e for e, _ in by_bytes) == b"".join(e for e, _ in by_events) == entries
    assert merge_requests([]) == []


def test_a_piece_over_the_limits_on_its_own_stays_alone():
    pieces = [(b"a" * 10, 1), (b"b" * 100, 1), (b"c" * 10, 1), (b"d" * 10, 1)]
    assert merge_requests(pieces, max_bytes=50) == [
        (b"a" * 10, 1), (b"b" * 100, 1), (b"c" * 10 + b"d" * 10, 2)
    ]
