"""The log-collector as a real process against peers that try to lock others out, blow up
its memory or disk, or feed it bytes that are not what they claim: every well-behaved
client is still served, memory stays under the pod's limit, the files under their volume's,
and what was acked reads back. Figures (ack time during a lock-out, RSS under each flood)
are measured by benchmarks/collector_floods.py; here only the bounds are held."""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import requests
from fluent.sender import EventTime

from patterns.common.forward import protocol
from patterns.common.forward.client import ForwardClient, ForwardError
from tests.conftest import wait_until
from tests.process import test_collector
from tests.process.test_collector import (
    Collector,
    closed_by_server,
    manifest_collector,
    packed,
    rss_bytes,
)

collector = test_collector.collector  # the same fixture: a collector process per test

MIB = 1024 * 1024


def entry(record: dict[str, Any]) -> bytes:
    return msgpack.packb([EventTime(time.time()), record], use_bin_type=True)


def connect(c: Collector) -> socket.socket:
    return socket.create_connection(("127.0.0.1", c.forward_port), timeout=10)


def acked(client: ForwardClient, tag: str, line: str) -> bool:
    """One attempt to have a line stored; a refused or closed connection is a False."""
    try:
        client.send_packed(tag, packed([line]), 1)
    except ForwardError:
        return False
    return True


def answer(sock: socket.socket, timeout: float = 30) -> str:
    """'acked', or 'closed' when the server closed the connection without an ack."""
    sock.settimeout(timeout)
    unpacker = msgpack.Unpacker(raw=False)
    try:
        while data := sock.recv(65536):
            unpacker.feed(data)
            for _ in unpacker:
                return "acked"
    except ConnectionResetError:
        pass
    return "closed"


@contextlib.contextmanager
def trickling(
    c: Collector, count: int, every: float, first_ahead: bool = False
) -> Iterator[list[int]]:
    """`count` sockets each sending a valid request one byte every `every` seconds; yields
    how many bytes each has sent so far (-1 once the collector closed it). `first_ahead`:
    the collector has read the first socket's first byte before the others send theirs, so
    its request is the one that started first by the collector's own clock."""
    frame = protocol.encode_packed_forward("trickle", packed(["x"] * 100), 100, "t")
    socks = [connect(c) for _ in range(count)]
    sent = [0] * count
    stop = threading.Event()
    if first_ahead:
        socks[0].send(frame[:1])
        sent[0] = 1
        wait_until(
            lambda: c.metric("collector_received_bytes_total") >= 1, what="the first byte read"
        )

    def run() -> None:
        while not stop.is_set():
            sending = False
            for i, sock in enumerate(socks):
                if not 0 <= sent[i] < len(frame):
                    continue
                sending = True
                try:
                    sock.send(frame[sent[i] : sent[i] + 1])
                    sent[i] += 1
                except OSError:
                    sent[i] = -1
            if not sending:
                return
            stop.wait(every)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop.set()
        thread.join()
        for sock in socks:
            sock.close()


def all_read(c: Collector, sent: list[int]) -> bool:
    """The collector has read every byte the trickles sent (none sent while we asked)."""
    before = sum(max(n, 0) for n in sent)
    read = c.metric("collector_received_bytes_total")
    return read >= before and sum(max(n, 0) for n in sent) == before


# --- item 4: lock-out ---------------------------------------------------------------------


def test_idle_and_trickling_sockets_do_not_lock_out_a_well_behaved_client(
    collector: Callable[..., Collector],
) -> None:
    env, _ = manifest_collector()
    table = int(env["COLLECTOR_MAX_CONNECTIONS"])
    # Neither timeout is what lets the good client in: both are far off.
    c = collector(COLLECTOR_MAX_CONNECTIONS=str(table), COLLECTOR_FRAME_TIMEOUT="600")
    with trickling(c, count=10, every=0.2) as sent:
        wait_until(lambda: min(sent) >= 2, what="the trickle under way")
        idle = [connect(c) for _ in range(table + 50)]  # more than the table holds
        wait_until(lambda: c.metric("collector_connections") == table, what="a full table")
        client = c.client(connect_timeout=5, ack_timeout=5)
        # Waiting with a deadline, not timing: the assertion is that it gets acked at all.
        wait_until(
            lambda: acked(client, "good", "served during the attack"),
            timeout=30,
            interval=0.2,
            what="the good client acked while the attack runs",
        )
        client.close()
        assert min(sent) > 0  # the trickles still run: the idle sockets gave way first
    assert c.metric("collector_evicted_connections_total", state="idle") >= 50
    assert [r["record"]["log"] for r in c.stored()] == ["served during the attack"]
    for sock in idle:
        sock.close()


def test_a_trickled_request_is_closed_at_its_deadline_not_kept_by_each_byte(
    collector: Callable[..., Collector],
) -> None:
    c = collector(COLLECTOR_FRAME_TIMEOUT="2")  # the idle timeout is the default 600 s
    with trickling(c, count=5, every=0.2) as sent:
        # One byte every 0.2 s would keep them open past any idle timeout; the request
        # would take 15 minutes to arrive. They are closed while they still send.
        wait_until(lambda: all(n < 0 for n in sent), timeout=30, what="trickles closed")
    assert c.metric("collector_rejected_frames_total", reason="frame_timeout") == 5


def test_a_table_full_of_trickling_sockets_still_makes_room(
    collector: Callable[..., Collector],
) -> None:
    c = collector(COLLECTOR_MAX_CONNECTIONS="8", COLLECTOR_FRAME_TIMEOUT="600")
    # The first socket's request starts first by the collector's clock, not only by ours:
    # bytes sent microseconds apart may be read in another order.
    with trickling(c, count=8, every=0.5, first_ahead=True) as sent:
        wait_until(lambda: c.metric("collector_connections") == 8, what="a full table")
        # Every byte sent has been read, so no trickle is still idle in the collector's eyes
        # (an idle one would rightly be the first to give way).
        wait_until(lambda: min(sent) >= 1 and all_read(c, sent), what="every socket receiving")
        client = c.client(connect_timeout=5, ack_timeout=5)
        wait_until(lambda: acked(client, "good", "in"), timeout=30, interval=0.2, what="acked")
        client.close()
        # The request that started first gave way; the others are still receiving.
        wait_until(lambda: sum(n < 0 for n in sent) == 1, what="one trickle closed")
        assert sent[0] < 0
    assert c.metric("collector_evicted_connections_total", state="receiving") == 1


# --- item 5: memory ---------------------------------------------------------------------


def partial_sockets(c: Collector, request: bytes, count: int) -> list[socket.socket]:
    """`count` connections each holding all but the last byte of `request`."""
    socks = []
    for _ in range(count):
        sock = connect(c)
        with contextlib.suppress(OSError):  # refused midway is as good
            sock.sendall(request[:-1])
        socks.append(sock)
    return socks


def gzip_request(record: dict[str, Any], count: int, chunk: str) -> bytes:
    entries = gzip.compress(entry(record) * count, 9)
    option = {"size": count, "chunk": chunk, "compressed": "gzip"}
    return msgpack.packb(["t", entries, option], use_bin_type=True)


def concurrently(count: int, work: Callable[[int], str]) -> list[str]:
    results = [""] * count
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, work(i)))
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def send_one(c: Collector, request: bytes) -> str:
    with connect(c) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(request)
        return answer(sock)


def test_the_issues_memory_floods_with_the_defaults_stay_under_the_pods_limit(
    collector: Callable[..., Collector],
) -> None:
    _, budget = manifest_collector()
    c = collector()  # the defaults: they are sized for the manifest's pod
    good = c.client()
    good.send_packed("good", packed(["before"]), 1)
    # 20 partial 16 MiB requests (they used to be buffered whole: 368 MiB and more).
    huge = protocol.encode_packed_forward("flood", b"\x00" * (16 * MIB - 1024), 1, "c")
    held = partial_sockets(c, huge, 20)
    # 4 partial 2 MiB Forward requests of empty maps (msgpack built a dict per byte).
    maps = b"\x93\xa1t\xdd" + (2 * MIB).to_bytes(4, "big") + b"\x80" * (2 * MIB - 4096)
    held += partial_sockets(c, maps + b"\x80", 4)
    # 8 small gzip requests that expand to 59 MiB of entries each, all at once.
    strings = gzip_request({"log": "x" * 600}, 100_000, "s")
    assert len(strings) < 200 * 1024
    assert concurrently(8, lambda _: send_one(c, strings)) == ["closed"] * 8
    # 8 tiny gzip requests of nested empty maps, all at once.
    nested = gzip_request({"m": [{}] * 100}, 12_500, "n")
    assert concurrently(8, lambda _: send_one(c, nested)) == ["closed"] * 8
    good.send_packed("good", packed(["during"]), 1)
    for sock in held:
        sock.close()
    good.send_packed("good", packed(["after"]), 1)
    good.close()
    peak = rss_bytes(c.proc.pid, "VmHWM")
    assert peak < budget, f"peak RSS {peak / MIB:.0f} MiB, limit {budget / MIB:.0f} MiB"
    assert c.metric("collector_rejected_frames_total", reason="too_large") >= 8 + 20
    assert c.metric("collector_rejected_frames_total", reason="too_many_values") == 8
    assert c.counts()["tags"] == {"good": 3}


def test_bytes_waiting_are_bounded_over_all_connections_whatever_the_frame_limit(
    collector: Callable[..., Collector],
) -> None:
    _, budget = manifest_collector()
    # An operator raised the frame limit: 20 partial 16 MiB requests fit it.
    c = collector(COLLECTOR_MAX_FRAME_BYTES=str(16 * MIB), COLLECTOR_FRAME_TIMEOUT="600")
    huge = protocol.encode_packed_forward("flood", b"\x00" * (16 * MIB - 1024), 1, "c")
    held = partial_sockets(c, huge, 20)
    limit = 16 * MIB  # COLLECTOR_MAX_BUFFERED_BYTES' default
    wait_until(
        lambda: c.metric("collector_evicted_connections_total", state="receiving")
        + c.metric("collector_rejected_frames_total", reason="buffers_full")
        >= 19,
        what="all but one partial request given way",
    )
    assert c.metric("collector_buffered_bytes") <= limit
    # A client arriving now is served all the same.
    with c.client() as good:
        good.send_packed("good", packed(["served"]), 1)
    for sock in held:
        sock.close()
    peak = rss_bytes(c.proc.pid, "VmHWM")
    assert peak < budget, f"peak RSS {peak / MIB:.0f} MiB, limit {budget / MIB:.0f} MiB"


# --- item 5: disk -----------------------------------------------------------------------


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def test_retention_keeps_the_store_under_its_limit_under_a_disk_amplifying_flood(
    collector: Callable[..., Collector],
) -> None:
    settings = {
        "COLLECTOR_MAX_FRAME_BYTES": str(256 * 1024),
        "COLLECTOR_MAX_DECOMPRESSED_BYTES": str(256 * 1024),
        "COLLECTOR_SEGMENT_BYTES": str(MIB),
        "COLLECTOR_RETENTION_BYTES": str(4 * MIB),
        "COLLECTOR_FSYNC": "false",
    }
    c = collector(**settings)
    # NULs: 1 byte of msgpack, 6 of JSON ("\u0000"); gzipped, ~1,000 times smaller. All
    # NULs would be more than 4 times the request as JSON, which is refused outright:
    count = (256 * 1024 - 4096) // len(entry({"log": "\x00" * 4000}))
    with connect(c) as sock:
        sock.sendall(gzip_request({"log": "\x00" * 4000}, count, "nul"))
        assert answer(sock) == "closed"
    assert c.metric("collector_rejected_frames_total", reason="too_large") == 1
    # so a quarter of them: 2.25 times as large as JSON.
    record = {"log": "\x00" * 1000 + "x" * 3000}
    sent = 0
    with connect(c) as sock:
        for i in range(60):
            request = gzip_request({**record, "i": i}, count, f"d{i}")
            sent += len(request)
            sock.sendall(request)
            assert answer(sock) == "acked"
            # Retention runs before each write: the files never pass their limit.
            assert disk_bytes(c.data_dir) <= 4 * MIB
    assert sent < 64 * 1024  # what a client sent, against the MiBs it made the store write
    dropped = c.metric("collector_retention_dropped_segments_total", reason="size")
    records = c.metric("collector_retention_dropped_records_total", reason="size")
    assert dropped >= 1 and records >= count
    assert c.metric("collector_retention_dropped_bytes_total", reason="size") >= MIB
    assert "retention dropped the oldest segment" in c.proc.output()
    # The newest acked records read back; counts include what was dropped, and say so.
    newest = c.get("/api/records?limit=1")["records"]
    assert newest[0]["record"]["i"] == 59 and newest[0]["record"]["log"] == record["log"]
    assert c.counts()["total"] == 60 * count
    assert c.proc.stop() == 0
    again = collector(**settings)
    assert again.counts()["total"] == 60 * count
    assert again.get("/api/records?limit=1")["records"] == newest


def test_requests_refused_for_their_size_as_json_hold_no_memory(
    collector: Callable[..., Collector],
) -> None:
    _, budget = manifest_collector()
    c = collector(COLLECTOR_FSYNC="false")
    # 2 MiB of NULs gzipped to ~2 KiB: 12 MiB as JSON lines, past the 8 MiB a request may
    # take. Refused each time, and each time its lines and events are freed at once (they
    # used to wait for the cycle collector, held by the failure's traceback: 350 MiB).
    record = {"log": "\x00" * 4000}
    count = (2 * MIB - 4096) // len(entry(record))
    request = gzip_request(record, count, "nul")
    for _ in range(150):
        assert send_one(c, request) == "closed"
    assert c.metric("collector_rejected_frames_total", reason="too_large") == 150
    assert c.counts()["total"] == 0 and disk_bytes(c.data_dir) == 0
    peak = rss_bytes(c.proc.pid, "VmHWM")
    assert peak < budget, f"peak RSS {peak / MIB:.0f} MiB, limit {budget / MIB:.0f} MiB"


def test_retention_by_age_drops_old_records_while_nothing_arrives(
    collector: Callable[..., Collector],
) -> None:
    c = collector(COLLECTOR_RETENTION_SECONDS="2", COLLECTOR_FSYNC="false")
    with c.client() as client:
        client.send_packed("old", packed(["old 1", "old 2"]), 2)
    wait_until(
        lambda: c.metric("collector_retention_dropped_records_total", reason="age") == 2,
        timeout=30,
        what="the old records dropped by age",
    )
    assert c.get("/api/records?tag=old&limit=10")["records"] == []
    with c.client() as client:
        client.send_packed("new", packed(["new"]), 1)
    assert [r["record"]["log"] for r in c.get("/api/records")["records"]] == ["new"]


# --- item 6 -----------------------------------------------------------------------------


def test_a_record_with_invalid_utf8_is_acked_readable_and_counted_after_a_restart(
    collector: Callable[..., Collector],
) -> None:
    c = collector()
    # A msgpack str holding bytes that are not UTF-8, as value and as key.
    bad_value = b"\x92\xd7\x00" + b"\x00" * 8 + b"\x81\xa3log\xa4ok\xff\xfe"
    bad_key = b"\x92\xd7\x00" + b"\x00" * 8 + b"\x81\xa2k\xff\x01"
    stream = entry({"log": "fine"}) + bad_value + bad_key
    with c.client() as client:
        client.send_packed("app", stream, 3)
    expected = [{"log": "fine"}, {"log": "ok\ufffd\ufffd"}, {"k\ufffd": 1}]
    assert [r["record"] for r in c.get("/api/records")["records"]] == expected
    assert c.counts()["tags"] == {"app": 3}
    assert c.proc.stop() == 0
    again = collector()
    assert again.counts()["tags"] == {"app": 3}
    assert [r["record"] for r in again.get("/api/records")["records"]] == expected


def test_a_ping_that_is_not_utf8_gets_a_failure_pong_without_a_traceback(
    collector: Callable[..., Collector],
) -> None:
    c = collector(COLLECTOR_SHARED_KEY="k")
    with connect(c) as sock:
        unpacker = msgpack.Unpacker(raw=False)
        sock.settimeout(10)

        def message() -> Any:
            while True:
                for obj in unpacker:
                    return obj
                data = sock.recv(65536)
                assert data, "closed without a message"
                unpacker.feed(data)

        protocol.decode_helo(message())
        # PING whose digest is the bytes 0xff 0xfe in a msgpack str.
        sock.sendall(b"\x96\xa4PING\xa3cli\xc4\x04salt\xa2\xff\xfe\xa0\xa0")
        pong = protocol.decode_pong(message())
        assert pong.auth_result is False and pong.reason == "invalid ping message"
        assert closed_by_server(sock)
    assert c.metric("collector_rejected_frames_total", reason="bad_handshake") == 1
    assert "Traceback" not in c.proc.output()
    with c.client(shared_key="k") as client:
        client.send_packed("after", packed(["still served"]), 1)


def test_a_chunk_that_is_not_utf8_is_refused_before_anything_is_stored(
    collector: Callable[..., Collector],
) -> None:
    c = collector()
    # Message mode with option {"chunk": <0xff 0xfe>}: the ack could not be written back.
    request = b"\x94\xa1t\x01\x81\xa1a\x01\x81\xa5chunk\xa2\xff\xfe"
    with connect(c) as sock:
        sock.sendall(request)
        assert answer(sock) == "closed"
    assert c.metric("collector_rejected_frames_total", reason="bad_option") == 1
    assert c.counts()["total"] == 0
    assert "Traceback" not in c.proc.output()


def test_counts_stay_bounded_whatever_the_number_of_distinct_tags(
    collector: Callable[..., Collector],
) -> None:
    c = collector(COLLECTOR_MAX_TAGS="100", COLLECTOR_FSYNC="false")
    with connect(c) as sock:
        # Message mode without acks, then one with: every one stored before the ack.
        for i in range(3000):
            sock.sendall(protocol.encode_message(f"junk.{i}", time.time(), {"i": i}))
            if i % 10 == 0:
                sock.sendall(protocol.encode_message("busy", time.time(), {"i": i}))
        sock.sendall(protocol.encode_message("busy", time.time(), {"last": 1}, chunk="end"))
        assert answer(sock) == "acked"
    response = requests.get(c.url("/api/counts"), timeout=5)
    counts = response.json()
    assert counts["total"] == 3000 + 301
    assert len(counts["tags"]) <= 100 and counts["distinct_tags"] == 100
    assert counts["tags"]["busy"] == 301  # the frequent tag stays, counted exactly
    assert counts["other"] == counts["total"] - sum(counts["tags"].values())
    assert len(response.content) < 16 * 1024


def test_the_live_page_api_answers_in_a_bounded_size(collector: Callable[..., Collector]) -> None:
    c = collector(COLLECTOR_FSYNC="false")  # the defaults: at most 100 tags listed
    tags = 5000
    with connect(c) as sock:
        for i in range(tags):
            sock.sendall(protocol.encode_message(f"t{i:05d}", time.time(), {"i": i}))
        sock.sendall(protocol.encode_message("t", time.time(), {}, chunk="end"))
        assert answer(sock) == "acked"
    counts = c.counts()
    assert len(counts["tags"]) == 100 and counts["distinct_tags"] == 1000
    assert counts["total"] == tags + 1 and counts["other"] == tags + 1 - 100
