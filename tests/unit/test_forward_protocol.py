"""The Forward protocol codec against the v1 specification: every carrier mode, EventTime,
options, acks, the handshake digests, and a ProtocolError for each kind of bad input."""

from __future__ import annotations

import base64
import gzip
import hashlib
import struct
import time
import tracemalloc
from typing import Any

import msgpack
import pytest
from fluent.sender import EventTime

from patterns.common.forward import protocol
from patterns.common.forward.protocol import Limits, ProtocolError, Request

T = 1_700_000_000.123456  # a time with sub-second precision


def decode(data: bytes, limits: Limits = protocol.DEFAULT_LIMITS) -> list[Request | None]:
    """Decode every request in `data` the way the server does: cut by a Framer, each
    complete request decoded on its own."""
    framer = protocol.Framer(limits.max_frame_bytes)
    framer.feed(data)
    requests = []
    while (frame := framer.next_frame()) is not None:
        requests.append(protocol.decode_frame(frame, limits))
    assert not framer.receiving, "data ends in the middle of a request"
    return requests


def only(data: bytes, limits: Limits = protocol.DEFAULT_LIMITS) -> Request:
    [request] = decode(data, limits)
    assert request is not None
    return request


def packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def entries(n: int) -> bytes:
    return b"".join(protocol.encode_entry(T + i, {"log": f"line {i}", "n": i}) for i in range(n))


# --- carrier modes ------------------------------------------------------------------------


def test_message_mode_round_trip_with_and_without_chunk() -> None:
    plain = only(protocol.encode_message("app.web", T, {"message": "hi"}))
    assert (plain.tag, plain.mode, plain.chunk) == ("app.web", protocol.MESSAGE, None)
    assert plain.events == [(pytest.approx(T, abs=1e-6), {"message": "hi"})]
    acked = only(protocol.encode_message("app.web", T, {"message": "hi"}, chunk="abc"))
    assert acked.chunk == "abc"


def test_forward_mode_round_trip() -> None:
    events = [(T + i, {"i": i}) for i in range(3)]
    request = only(protocol.encode_forward("app.fw", events, chunk="c1"))
    assert request.mode == protocol.FORWARD
    assert request.chunk == "c1"
    assert [r for _, r in request.events] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert [t for t, _ in request.events] == pytest.approx([T, T + 1, T + 2], abs=1e-6)


def test_packed_forward_round_trip_and_option() -> None:
    frame = protocol.encode_packed_forward("app.packed", entries(4), 4, "c2")
    tag, stream, option = msgpack.unpackb(frame, raw=False)
    assert tag == "app.packed"
    assert isinstance(stream, bytes)  # the spec's SHOULD: bin, not str
    assert option == {"size": 4, "chunk": "c2"}
    request = only(frame)
    assert request.mode == protocol.PACKED_FORWARD
    assert [r["log"] for _, r in request.events] == [f"line {i}" for i in range(4)]


def test_compressed_packed_forward_round_trip() -> None:
    frame = protocol.encode_packed_forward("app.gz", entries(5), 5, "c3", compressed=True)
    _, stream, option = msgpack.unpackb(frame, raw=False)
    assert option["compressed"] == "gzip"
    assert gzip.decompress(stream) == entries(5)
    request = only(frame)
    assert request.mode == protocol.COMPRESSED_PACKED_FORWARD
    assert len(request.events) == 5


def test_compressed_entries_may_be_several_gzip_members() -> None:
    stream = gzip.compress(entries(2)) + gzip.compress(entries(3))
    request = only(packb(["t", stream, {"compressed": "gzip"}]))
    assert len(request.events) == 5


def test_packed_entries_as_str_are_accepted_like_out_forward_sends_them() -> None:
    # out_forward encloses entries in msgpack str, binary bytes and all.
    raw = entries(3)
    frame = b"\x92" + b"\xa1t" + b"\xdb" + struct.pack(">I", len(raw)) + raw
    assert [r["n"] for _, r in only(frame).events] == [0, 1, 2]


def test_unknown_compressed_value_is_ignored_as_the_spec_says() -> None:
    request = only(packb(["t", entries(1), {"compressed": "text", "chunk": "x"}]))
    assert request.mode == protocol.PACKED_FORWARD


def test_nil_is_a_heartbeat() -> None:
    assert decode(packb(None)) == [None]


def test_several_requests_in_one_buffer() -> None:
    data = protocol.encode_message("a", T, {"x": 1}) + protocol.encode_forward("b", [(T, {})])
    assert [r.tag for r in decode(data) if r] == ["a", "b"]


def test_integer_times_and_zero_meaning_now() -> None:
    assert only(packb(["t", 1_500_000_000, {}])).events[0][0] == 1_500_000_000.0
    before = time.time()
    stamped = only(packb(["t", 0, {}])).events[0][0]
    assert before <= stamped <= time.time()


def test_ack_round_trip() -> None:
    assert protocol.decode_ack(msgpack.unpackb(protocol.encode_ack("xyz"))) == "xyz"
    with pytest.raises(ProtocolError):
        protocol.decode_ack({"nack": "xyz"})


def test_chunk_id_is_base64_of_128_bits_and_unique() -> None:
    ids = {protocol.new_chunk_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(base64.b64decode(i, validate=True)) == 16 for i in ids)


# --- EventTime ----------------------------------------------------------------------------


def test_event_time_is_ext_type_0_with_seconds_and_nanoseconds() -> None:
    packed = protocol.encode_entry(1_600_000_000.5, {})
    # fixarray(2), fixext8, type 0, 32-bit seconds BE, 32-bit nanoseconds BE, fixmap(0)
    assert packed == b"\x92\xd7\x00" + struct.pack(">II", 1_600_000_000, 500_000_000) + b"\x80"


def test_event_time_decodes_from_fixext8_and_ext8() -> None:
    body = struct.pack(">II", 1_600_000_000, 250_000_000)
    fixext = b"\x93\xa1t\xd7\x00" + body + b"\x80"
    ext8 = b"\x93\xa1t\xc7\x08\x00" + body + b"\x80"
    for frame in (fixext, ext8):
        assert only(frame).events[0][0] == 1_600_000_000.25


def test_event_time_from_fluent_logger_round_trips_nanoseconds() -> None:
    frame = packb(["t", EventTime(1_600_000_000, 123_456_789), {}])
    assert only(frame).events[0][0] == pytest.approx(1_600_000_000.123456789, abs=1e-9)


# --- handshake ----------------------------------------------------------------------------


def test_digests_follow_the_spec_formulas() -> None:
    salt, host, nonce, key = b"salt", "client.example", b"\x01\x02nonce", "s3cret"
    expected = hashlib.sha512(salt + host.encode() + nonce + key.encode()).hexdigest()
    assert protocol.shared_key_digest(salt, host, nonce, key) == expected
    auth = b"authsalt"
    assert (
        protocol.password_digest(auth, "alice", "pw")
        == hashlib.sha512(auth + b"alice" + b"pw").hexdigest()
    )


def test_full_handshake_succeeds_with_the_same_key() -> None:
    nonce = b"n" * 16
    helo = protocol.decode_helo(msgpack.unpackb(protocol.encode_helo(nonce), raw=False))
    assert helo == protocol.Helo(nonce, b"", True)
    ping_bytes, salt = protocol.encode_ping(helo, "client.example", "key")
    ping = protocol.decode_ping(msgpack.unpackb(ping_bytes, raw=False))
    assert ping.shared_key_salt == salt
    assert ping.username == "" and ping.password == ""
    assert protocol.check_ping(ping, nonce, "key") == ""
    digest = protocol.shared_key_digest(salt, "server.example", nonce, "key")
    pong = protocol.decode_pong(
        msgpack.unpackb(protocol.encode_pong(True, "", "server.example", digest), raw=False)
    )
    assert pong == protocol.Pong(True, "", "server.example", digest)


def test_wrong_shared_key_is_a_mismatch() -> None:
    nonce = b"n" * 16
    ping_bytes, _ = protocol.encode_ping(protocol.Helo(nonce, b"", True), "c", "wrong")
    ping = protocol.decode_ping(msgpack.unpackb(ping_bytes, raw=False))
    assert protocol.check_ping(ping, nonce, "right") == "shared key mismatch"


def test_username_and_password_are_checked_when_the_server_sends_an_auth_salt() -> None:
    nonce, auth = b"n" * 16, b"a" * 16
    users = {"alice": "pw"}
    helo = protocol.Helo(nonce, auth, True)
    good, _ = protocol.encode_ping(helo, "c", "key", "alice", "pw")
    bad, _ = protocol.encode_ping(helo, "c", "key", "alice", "nope")
    stranger, _ = protocol.encode_ping(helo, "c", "key", "mallory", "pw")
    check = lambda raw: protocol.check_ping(  # noqa: E731
        protocol.decode_ping(msgpack.unpackb(raw, raw=False)), nonce, "key", auth, users
    )
    assert check(good) == ""
    assert check(bad) == "username/password mismatch"
    assert check(stranger) == "username/password mismatch"


def test_a_ping_or_pong_that_is_not_utf8_is_a_handshake_error_not_a_crash() -> None:
    # The Forward decoder keeps invalid UTF-8 as lone surrogates; comparing such a digest
    # used to raise UnicodeEncodeError out of the server.
    ping = b"\x96\xa4PING\xa1c\xc4\x01s\xa2\xff\xfe\xa0\xa0"  # digest: 0xff 0xfe
    unpacked = protocol.unpack(ping)
    with pytest.raises(ProtocolError) as raised:
        protocol.decode_ping(unpacked)
    assert raised.value.reason == "bad_handshake"
    pong = b"\x95\xa4PONG\xc3\xa0\xa1h\xa2\xff\xfe"
    with pytest.raises(ProtocolError) as raised:
        protocol.decode_pong(protocol.unpack(pong))
    assert raised.value.reason == "bad_handshake"
    assert protocol.hmac_equal("abc", "\udcff") is False


@pytest.mark.parametrize(
    "message, decoder",
    [
        (["PING", "c", b"s", "d", "", ""], protocol.decode_helo),
        (["HELO"], protocol.decode_helo),
        (["HELO", {"nonce": 5}], protocol.decode_helo),
        (["HELO", "x"], protocol.decode_helo),
        (["PING", "c", b"s", "d", ""], protocol.decode_ping),
        (["PING", 1, b"s", "d", "", ""], protocol.decode_ping),
        (["tag", 1, {}], protocol.decode_ping),
        (None, protocol.decode_ping),
        (["PONG", "yes", "", "h", "d"], protocol.decode_pong),
        ({"ack": "x"}, protocol.decode_pong),
    ],
)
def test_malformed_handshake_messages(message: Any, decoder: Any) -> None:
    with pytest.raises(ProtocolError) as raised:
        decoder(message)
    assert raised.value.reason == "bad_handshake"


# --- malformed input ----------------------------------------------------------------------


def deep(levels: int) -> bytes:
    return b"\x91" * levels + b"\xc0"


def bomb() -> bytes:
    """4 MiB of one valid entry (a string of NULs), gzipped to a few KiB."""
    entry = protocol.encode_entry(T, {"log": "\x00" * (4 * 1024 * 1024)})
    return gzip.compress(entry, compresslevel=9)


SMALL = Limits(
    max_frame_bytes=64 * 1024, max_decompressed_bytes=1024 * 1024, max_entries=10, max_values=500
)

MALFORMED = {
    "not msgpack": (b"\xc1", "bad_msgpack"),
    "request is a string": (packb("hello"), "bad_request"),
    "request is a map": (packb({"tag": "t"}), "bad_request"),
    "empty array": (packb([]), "bad_request"),
    "array too long": (packb(["t", 1, {}, {}, {}]), "bad_request"),
    "message without record": (packb(["t", 1]), "bad_request"),
    "tag is an integer": (packb([5, 1, {}]), "bad_tag"),
    "empty tag": (packb(["", 1, {}]), "bad_tag"),
    "tag with control characters": (packb(["a\nb", 1, {}]), "bad_tag"),
    "time is a map": (packb(["t", {"a": 1}, {}]), "bad_time"),
    "packed entries that are a plain string": (packb(["t", "now", {}]), "bad_entry"),
    "time is a boolean": (packb(["t", True, {}]), "bad_time"),
    "time is negative": (packb(["t", -5, {}]), "bad_time"),
    "time is NaN": (packb(["t", float("nan"), {}]), "bad_time"),
    "time beyond 32 bits": (packb(["t", 2**40, {}]), "bad_time"),
    "EventTime of 4 bytes": (b"\x93\xa1t\xd6\x00" + b"\x00" * 4 + b"\x80", "bad_time"),
    "EventTime nanoseconds >= 1e9": (
        b"\x93\xa1t\xd7\x00" + struct.pack(">II", 1, 1_000_000_000) + b"\x80",
        "bad_time",
    ),
    "unknown ext type": (b"\x93\xa1t\xd7\x05" + b"\x00" * 8 + b"\x80", "bad_msgpack"),
    "record is an array": (packb(["t", 1, [1, 2]]), "bad_record"),
    "record is nil": (packb(["t", 1, None]), "bad_record"),
    "option is an array": (packb(["t", 1, {}, [1]]), "bad_option"),
    "chunk is an integer": (packb(["t", 1, {}, {"chunk": 7}]), "bad_option"),
    "size is negative": (packb(["t", [], {"size": -1}]), "bad_option"),
    "forward entry not an array": (packb(["t", [5]]), "bad_entry"),
    "forward entry of 3 elements": (packb(["t", [[1, {}, 3]]]), "bad_entry"),
    "forward entry with bad record": (packb(["t", [[1, "x"]]]), "bad_record"),
    "forward entries over the limit": (packb(["t", [[1, {}]] * 11]), "too_many_entries"),
    "packed entries not msgpack": (packb(["t", b"\xc1\xc1"]), "bad_msgpack"),
    "packed entries truncated": (packb(["t", entries(2)[:-3]]), "bad_entry"),
    "packed entry not an array": (packb(["t", packb(5)]), "bad_entry"),
    "packed entries over the limit": (packb(["t", entries(11)]), "too_many_entries"),
    "packed entries deeply nested": (packb(["t", deep(10_000)]), "bad_msgpack"),
    "request deeply nested": (deep(10_000), "bad_msgpack"),
    "map with a non-string key": (packb(["t", 1, {1: 2}]), "bad_msgpack"),
    "not gzip": (packb(["t", b"not gzip at all", {"compressed": "gzip"}]), "bad_gzip"),
    "truncated gzip": (
        packb(["t", gzip.compress(entries(3))[:-10], {"compressed": "gzip"}]),
        "bad_gzip",
    ),
    "gzip bomb": (packb(["t", bomb(), {"compressed": "gzip"}]), "too_large"),
    "too many values": (packb(["t", 1, {"m": [[]] * 300}]), "too_many_values"),
    "too many values in packed entries": (
        packb(["t", protocol.encode_entry(T, {"m": [{}] * 300})]),
        "too_many_values",
    ),
    "too many values in gzipped entries": (
        packb(
            ["t", gzip.compress(protocol.encode_entry(T, {"m": [0] * 600})), {"compressed": "gzip"}]
        ),
        "too_many_values",
    ),
    "too many values in forward entries": (
        packb(["t", [[1, {"a": [1] * 600}]]]),
        "too_many_values",
    ),
    "chunk that is not UTF-8": (
        b"\x94\xa1t\x01\x80\x81\xa5chunk\xa2\xff\xfe",
        "bad_option",
    ),
}


@pytest.mark.parametrize("data, reason", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_input_raises_protocol_error(data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        decode(data, SMALL)
    assert raised.value.reason == reason
    assert raised.value.detail  # says what exactly was wrong


def test_a_request_larger_than_the_frame_limit_is_refused_before_it_is_buffered() -> None:
    unpacker = protocol.new_unpacker(SMALL.max_frame_bytes)
    with pytest.raises(ProtocolError) as raised:
        protocol.feed(unpacker, b"\x00" * (SMALL.max_frame_bytes + 1), SMALL.max_frame_bytes)
    assert raised.value.reason == "too_large"


def test_gunzip_stops_at_the_limit() -> None:
    with pytest.raises(ProtocolError) as raised:
        protocol.gunzip(bomb(), 1024 * 1024)
    assert raised.value.reason == "too_large"
    assert protocol.gunzip(gzip.compress(b"abc"), 3) == b"abc"


def test_gunzip_counts_each_piece_before_it_exists() -> None:
    # A bomb is stopped having produced at most the limit plus one byte, a piece at a time:
    # never the whole output in memory.
    produced = []
    with pytest.raises(ProtocolError) as raised:
        for piece in protocol.gunzip_pieces(bomb(), 1024 * 1024):
            produced.append(len(piece))
    assert raised.value.reason == "too_large"
    assert sum(produced) <= 1024 * 1024 and max(produced) <= 64 * 1024
    members = gzip.compress(b"a" * 100_000) + gzip.compress(b"b" * 100_000)
    assert b"".join(protocol.gunzip_pieces(members, 200_000)) == b"a" * 100_000 + b"b" * 100_000


def peak_memory(work: Any) -> int:
    """Peak bytes Python allocated while running `work()` (msgpack allocates through it)."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_partial_request_costs_its_bytes_not_the_objects_they_describe() -> None:
    # 1 MiB of empty maps inside a Forward request, not yet complete: msgpack's decoder
    # would build a 72-byte dict per byte as it arrives (~80 MiB). The framer holds bytes.
    size = 1024 * 1024
    data = b"\x93\xa1t\xdd" + struct.pack(">I", size) + b"\x80" * size

    def receive() -> None:
        framer = protocol.Framer(2 * size)
        for start in range(0, len(data) - 1, 65536):
            framer.feed(data[start : min(start + 65536, len(data) - 1)])
        assert framer.receiving and framer.next_frame() is None
        assert framer.held == len(data) - 1

    assert peak_memory(receive) < 4 * size


def test_decoding_stops_at_the_value_limit_before_building_the_rest() -> None:
    frame = packb(["t", 1, {"m": [{}] * 1_000_000}])  # 1 MiB of empty maps, complete
    limits = Limits(max_values=10_000)

    def decode_it() -> None:
        with pytest.raises(ProtocolError) as raised:
            protocol.decode_frame(frame, limits)
        assert raised.value.reason == "too_many_values"

    assert peak_memory(decode_it) < 8 * len(frame)


def test_the_framer_cuts_requests_wherever_the_bytes_are_split() -> None:
    requests = [
        protocol.encode_message("a", T, {"x": 1}, chunk="c1"),
        protocol.encode_packed_forward("b", entries(50), 50, "c2", compressed=True),
        packb(None),
        protocol.encode_forward("c", [(T, {"y": [1, 2, {"z": "w"}]})]),
    ]
    stream = b"".join(requests)
    for step in (1, 7, 100, len(stream)):
        framer = protocol.Framer(64 * 1024)
        frames = []
        for start in range(0, len(stream), step):
            framer.feed(stream[start : start + step])
            while (frame := framer.next_frame()) is not None:
                frames.append(frame)
        assert frames == requests, step
        assert framer.held == 0 and not framer.receiving


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\xc1", "bad_msgpack"),
        (deep(10_000), "bad_msgpack"),
        (b"\x93\xa1t\xc6" + struct.pack(">I", 2**31) + b"x" * 70_000, "too_large"),
        (b"\x93\xa1t\xdd" + struct.pack(">I", 2**31) + b"\xc0" * 70_000, "too_large"),
        (packb(["t", b"x" * 70_000]), "too_large"),
    ],
    ids=["bad byte", "deep nesting", "huge bin", "huge array", "complete but too large"],
)
def test_the_framer_refuses_malformed_or_oversized_requests(data: bytes, reason: str) -> None:
    framer = protocol.Framer(64 * 1024)
    with pytest.raises(ProtocolError) as raised:
        framer.feed(data)
    assert raised.value.reason == reason


def test_a_declared_length_that_never_arrives_waits_within_the_size_limit() -> None:
    # Nothing is allocated for the declared 2**31 elements; the server's deadline ends it.
    framer = protocol.Framer(64 * 1024)
    framer.feed(b"\x93\xa1t\xdd" + struct.pack(">I", 2**31))
    assert framer.receiving and framer.next_frame() is None
