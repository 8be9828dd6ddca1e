"""The log-shipper and the log-collector as real processes: every line written arrives,
exactly once, through rotations, a collector outage, SIGKILL, SIGTERM and garbage input."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from patterns.common.forward import protocol
from tests.conftest import free_port, http_ok, wait_until

LINE_BYTES = 120
PADDING = "x" * (LINE_BYTES - 10)


def seq_line(seq: int) -> bytes:
    return f"{seq:09d} {PADDING}\n".encode()


class Collector:
    def __init__(self, service, tmp_path: Path) -> None:
        self.service = service
        self.data_dir = tmp_path / "collector"
        self.forward_port = free_port()
        self.http_port = free_port()
        self.proc = None
        self.extra_env: dict[str, str] = {}

    def start(self) -> Collector:
        self.proc = self.service(
            "patterns.sidecar.collector",
            {
                "COLLECTOR_FORWARD_HOST": "127.0.0.1",
                "COLLECTOR_FORWARD_PORT": str(self.forward_port),
                "COLLECTOR_HTTP_HOST": "127.0.0.1",
                "COLLECTOR_HTTP_PORT": str(self.http_port),
                "COLLECTOR_DATA_DIR": str(self.data_dir),
                "COLLECTOR_FSYNC": "false",
                **self.extra_env,
            },
        )
        wait_until(lambda: http_ok(f"http://127.0.0.1:{self.http_port}/readyz"), what="collector")
        return self

    def count(self) -> int:
        try:
            return int(
                requests.get(f"http://127.0.0.1:{self.http_port}/api/counts", timeout=2).json()[
                    "total"
                ]
            )
        except requests.RequestException:
            return -1

    def wait_for(self, total: int, timeout: float = 60) -> None:
        wait_until(lambda: self.count() >= total, timeout=timeout, what=f"{total} events collected")

    def records(self) -> list[dict]:
        records = []
        for path in sorted(self.data_dir.glob("records-*.jsonl")):
            for raw in path.read_bytes().split(b"\n"):
                if raw:
                    records.append(json.loads(raw)["record"])
        return records

    def sequence_counts(self) -> Counter[int]:
        return Counter(int(record["log"][:9]) for record in self.records())


class Shipper:
    def __init__(self, service, tmp_path: Path, collector: Collector, paths: str, **env: str):
        self.service = service
        self.http_port = free_port()
        self.env = {
            "SHIPPER_PATHS": paths,
            "SHIPPER_STATE_DIR": str(tmp_path / "shipper-state"),
            "SHIPPER_HTTP_HOST": "127.0.0.1",
            "SHIPPER_HTTP_PORT": str(self.http_port),
            "FLUENT_HOST": "127.0.0.1",
            "FLUENT_PORT": str(collector.forward_port),
            "SHIPPER_ROTATE_WAIT": "1",
            "SHIPPER_RETRY_MAX": "1",
            "SHIPPER_CHECKPOINT_FSYNC": "false",
            **env,
        }
        self.proc = None

    def start(self) -> Shipper:
        self.proc = self.service("patterns.sidecar.shipper", self.env)
        wait_until(lambda: http_ok(f"http://127.0.0.1:{self.http_port}/readyz"), what="shipper")
        return self

    def metrics(self) -> dict[str, float]:
        text = requests.get(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5).text
        values = {}
        for line in text.splitlines():
            match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$", line)
            if match:
                values[match.group(1)] = float(match.group(2))
        return values

    def peak_rss(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


class RotatingWriter(threading.Thread):
    """Writes numbered lines at `rate` lines/s to `path`, rotating it now and then: by
    rename (the old file gets one more write through the old handle, like an app that
    reopens its log a moment later) or by copytruncate.

    The writer does its own copytruncate between two of its writes: lines written between
    `cp` and `truncate` are lost by copytruncate itself (they are in neither file), which
    is logrotate's documented race, not something a shipper can recover.
    """

    def __init__(
        self,
        path: Path,
        total: int,
        rate: int,
        renames: int = 0,
        copytruncates: int = 0,
        rotate_every: float | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.path, self.total, self.rate = path, total, rate
        # copytruncates spread evenly among the renames
        count = renames + copytruncates
        self.plan = [
            "copytruncate"
            if (i + 1) * copytruncates // count > i * copytruncates // count
            else "rename"
            for i in range(count)
        ]
        self.rotate_every = rotate_every
        self.rotations: Counter[str] = Counter()
        self.written = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _run(self) -> None:
        batch = 25
        handle = open(self.path, "ab")  # noqa: SIM115
        spacing = self.total // (len(self.plan) + 1) if self.plan else None
        next_rotation = spacing
        started = time.monotonic()
        next_time_rotation = started + self.rotate_every if self.rotate_every else None
        kinds = iter(self.plan)
        seq = 0
        while seq < self.total:
            handle.write(b"".join(seq_line(s) for s in range(seq, min(seq + batch, self.total))))
            handle.flush()
            seq = min(seq + batch, self.total)
            self.written = seq
            due = (next_rotation is not None and seq >= next_rotation) or (
                next_time_rotation is not None and time.monotonic() >= next_time_rotation
            )
            if due and seq < self.total:
                kind = next(kinds, "rename") if next_rotation is not None else "rename"
                if next_rotation is not None:
                    next_rotation += spacing
                if next_time_rotation is not None:
                    next_time_rotation += self.rotate_every
                handle = self._rotate(kind, handle, seq)
                seq = self.written
            pause = started + seq / self.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        handle.close()

    def _rotate(self, kind: str, handle, seq: int):
        number = sum(self.rotations.values()) + 1
        self.rotations[kind] += 1
        if kind == "copytruncate":
            shutil.copyfile(self.path, self.path.with_name(f"{self.path.name}.copy{number}"))
            handle.truncate(0)  # append mode: the next write lands at offset 0
            return handle
        os.rename(self.path, self.path.with_name(f"{self.path.name}.{number}"))
        end = min(seq + 5, self.total)
        handle.write(b"".join(seq_line(s) for s in range(seq, end)))  # a late write
        handle.close()
        self.written = end
        return open(self.path, "ab")


def retries(shipper: Shipper) -> float:
    return sum(v for k, v in shipper.metrics().items() if k.startswith("shipper_retries_total"))


def assert_exactly_once(collector: Collector, total: int) -> None:
    counts = collector.sequence_counts()
    missing = [s for s in range(total) if s not in counts]
    duplicated = {s: n for s, n in counts.items() if n > 1}
    assert not missing, f"{len(missing)} lines lost, first {missing[:10]}"
    assert not duplicated, f"{len(duplicated)} lines duplicated, first {list(duplicated)[:10]}"
    assert len(counts) == total


def assert_at_most_one_batch_repeated(collector: Collector, total: int, batch_bytes: int):
    counts = collector.sequence_counts()
    assert [s for s in range(total) if s not in counts] == [], "lines lost"
    assert set(counts) == set(range(total))
    duplicated = sorted(s for s, n in counts.items() if n > 1)
    assert all(n <= 2 for n in counts.values())
    lines_per_batch = batch_bytes // len(seq_line(0)) + 1
    assert len(duplicated) <= lines_per_batch, f"{len(duplicated)} duplicates: more than a batch"
    if duplicated:
        assert duplicated == list(range(duplicated[0], duplicated[-1] + 1)), "one contiguous batch"


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    directory = tmp_path / "logs"
    directory.mkdir()
    return directory


def test_every_line_arrives_once_across_rename_and_copytruncate_rotations(service, tmp_path, logs):
    collector = Collector(service, tmp_path).start()
    shipper = Shipper(service, tmp_path, collector, str(logs / "app.log")).start()
    writer = RotatingWriter(
        logs / "app.log", total=60_000, rate=6_000, renames=55, copytruncates=22
    )
    writer.start()
    writer.join(60)
    assert writer.error is None and not writer.is_alive()
    assert writer.rotations["rename"] >= 50 and writer.rotations["copytruncate"] >= 20
    collector.wait_for(writer.total)
    metrics = shipper.metrics()
    # Every rotation is seen once: a rename as a rotation; a copytruncate as a truncation
    # whose copy is read on from where the shipper was, or, if the shipper had not opened
    # the file yet or had seen none of its bytes, its copy as a generation of its own, read
    # from 0 (a rotation). Which of the two is timing alone: how far the shipper lags then.
    rotations = metrics["shipper_rotations_total"]
    truncations = metrics["shipper_truncations_total"]
    assert rotations >= writer.rotations["rename"]
    assert rotations + truncations == sum(writer.rotations.values())
    # Each copytruncate left a copy: a truncation without one would mean lines lost.
    assert metrics["shipper_truncations_without_copy_total"] == 0
    assert metrics["shipper_copies_found_total"] == truncations
    assert shipper.proc.stop() == 0  # once it has exited, no duplicate can still arrive
    assert_exactly_once(collector, writer.total)
    assert {r["file"] for r in collector.records()} == {str(logs / "app.log")}


def test_collector_outage_of_30s_under_load_loses_and_duplicates_nothing(service, tmp_path, logs):
    collector = Collector(service, tmp_path).start()
    shipper = Shipper(service, tmp_path, collector, str(logs / "*.log")).start()
    writer = RotatingWriter(logs / "app.log", total=80_000, rate=2_000, rotate_every=4.0)
    writer.start()
    wait_until(lambda: collector.count() > 2_000, what="shipping before the outage")
    assert collector.proc.stop() == 0
    outage_end = time.monotonic() + 30
    while time.monotonic() < outage_end:
        assert shipper.proc.alive()
        assert http_ok(f"http://127.0.0.1:{shipper.http_port}/readyz"), "outage made it unready"
        time.sleep(1)
    metrics = shipper.metrics()
    assert metrics["shipper_backlog_bytes"] > 0
    assert metrics["shipper_collector_up"] == 0
    assert sum(v for k, v in metrics.items() if k.startswith("shipper_retries_total")) >= 1
    assert metrics["shipper_rotations_total"] >= 5, "rotated during the outage"
    Collector.start(collector)  # same ports, same data directory
    writer.join(60)
    assert writer.error is None and not writer.is_alive()
    collector.wait_for(writer.total, timeout=60)
    assert shipper.proc.stop() == 0  # once it has exited, no duplicate can still arrive
    assert_exactly_once(collector, writer.total)


def test_collector_sigkill_under_load_repeats_only_the_request_it_had_not_acked(
    service, tmp_path, logs
):
    """The collector acks a request only once it is written, so a SIGKILL can cost at most
    the request being written and not yet acked: the shipper sends it again. Everything
    acked before the kill is never sent again; nothing is lost."""
    collector = Collector(service, tmp_path)
    collector.extra_env = {"COLLECTOR_FSYNC": "true"}  # as deployed: written, synced, acked
    collector.start()
    shipper = Shipper(service, tmp_path, collector, str(logs / "*.log")).start()
    writer = RotatingWriter(logs / "app.log", total=60_000, rate=6_000, rotate_every=2.0)
    writer.start()
    wait_until(lambda: collector.count() > 10_000, what="shipping before the kill")
    collector.proc.kill()
    # What the collector had written when it died, less a partial last line (the restarted
    # collector cuts it: it was never acked).
    data = b"".join(p.read_bytes() for p in sorted(collector.data_dir.glob("records-*.jsonl")))
    before = [int(json.loads(raw)["record"]["log"][:9]) for raw in data.split(b"\n")[:-1]]
    # Down for a while: the shipper retries, the app writes and rotates.
    rotated_at_kill = sum(writer.rotations.values())
    wait_until(lambda: retries(shipper) >= 1, what="the shipper retrying")
    wait_until(lambda: sum(writer.rotations.values()) > rotated_at_kill or not writer.is_alive(),
               what="a rotation while the collector is down")
    assert shipper.proc.alive()
    Collector.start(collector)  # same ports, same data directory
    writer.join(60)
    assert writer.error is None and not writer.is_alive()
    collector.wait_for(writer.total)
    assert shipper.proc.stop() == 0  # once it has exited, no duplicate can still arrive
    counts = collector.sequence_counts()
    assert set(counts) == set(range(writer.total)), "lines lost"
    repeated = [s for s in before if counts[s] > 1]
    assert all(n <= 2 for n in counts.values())
    # Only the last request written before the kill can come again, as one block.
    assert repeated == before[len(before) - len(repeated) :], "an acked line came again"
    assert len(repeated) <= 512 * 1024 // len(seq_line(0)) + 1, "more than one request"
    assert sorted(s for s, n in counts.items() if n > 1) == sorted(repeated)


def test_sigkill_and_restart_loses_nothing_and_repeats_at_most_one_batch(service, tmp_path, logs):
    batch_bytes = 64 * 1024
    # Large enough that the kill lands mid-stream even when this test is slow to see
    # the first 20,000 lines arrive (the shipper sends ~150,000 lines a second).
    total = 600_000
    with open(logs / "app.log", "wb") as handle:
        for start in range(0, total, 1000):
            handle.write(b"".join(seq_line(s) for s in range(start, start + 1000)))
    collector = Collector(service, tmp_path).start()
    env = {"SHIPPER_BATCH_BYTES": str(batch_bytes)}
    shipper = Shipper(service, tmp_path, collector, str(logs / "app.log"), **env).start()
    wait_until(lambda: collector.count() > 20_000, what="shipping to be under way")
    shipper.proc.kill()
    killed_at = collector.count()
    assert killed_at < total, "the kill should land mid-stream"
    shipper = Shipper(service, tmp_path, collector, str(logs / "app.log"), **env).start()
    collector.wait_for(total)
    assert shipper.proc.stop() == 0  # once it has exited, no duplicate can still arrive
    assert_at_most_one_batch_repeated(collector, total, batch_bytes)


def test_sigkill_while_the_app_writes_and_rotates_loses_nothing(service, tmp_path, logs):
    batch_bytes = 64 * 1024
    env = {"SHIPPER_BATCH_BYTES": str(batch_bytes)}
    collector = Collector(service, tmp_path).start()
    shipper = Shipper(service, tmp_path, collector, str(logs / "app.log"), **env).start()
    writer = RotatingWriter(logs / "app.log", total=60_000, rate=6_000, renames=8)
    writer.start()
    wait_until(lambda: collector.count() > 10_000, what="shipping under way")
    shipper.proc.kill()
    killed_at = sum(writer.rotations.values())
    # The app goes on writing, and renames its log at least once while the shipper is down.
    wait_until(lambda: sum(writer.rotations.values()) > killed_at, what="a rotation while down")
    assert writer.is_alive(), "the writer should still be writing at the restart"
    shipper = Shipper(service, tmp_path, collector, str(logs / "app.log"), **env).start()
    writer.join(60)
    assert writer.error is None and not writer.is_alive()
    assert writer.rotations["rename"] == 8
    collector.wait_for(writer.total)
    assert shipper.proc.stop() == 0  # once it has exited, no duplicate can still arrive
    assert_at_most_one_batch_repeated(collector, writer.total, batch_bytes)
    restarted = shipper.proc.output()
    assert "found elsewhere (renamed" in restarted or "rotated away while we were down" in restarted


def test_garbage_input_is_shipped_counted_and_memory_stays_bounded(service, tmp_path, logs):
    collector = Collector(service, tmp_path).start()
    shipper = Shipper(service, tmp_path, collector, str(logs / "*.log")).start()
    (logs / "utf8.log").write_bytes(b"ok\nbad \xff\xfe\xfd end\nalso \xc3 bad\n")
    (logs / "nul.log").write_bytes(b"nul \x00 inside\n\x00\x00\x00\n")
    collector.wait_for(5)
    baseline = shipper.peak_rss()  # warm: files followed, batches encoded and acked
    line_bytes = 40 * 1024 * 1024
    with open(logs / "long.log", "wb") as handle:
        for _ in range(40):  # 40 MiB in one line without a newline, written in pieces
            handle.write(b"L" * (1024 * 1024))
            handle.flush()
            time.sleep(0.05)
    truncated = logs / "truncated.log"
    truncated.write_bytes(b"before 1\nbefore 2\nhalf a li")
    wait_until(
        lambda: any(r["log"] == "before 2" for r in collector.records()),
        what="the lines before the truncation",
    )
    with open(truncated, "r+b") as handle:  # truncated mid-line, no copy anywhere
        handle.truncate(0)
    with open(truncated, "ab") as handle:
        handle.write(b"after\n")
    with open(logs / "long.log", "ab") as handle:
        handle.write(b"\nnext line\n")
    pieces = line_bytes // (64 * 1024)
    expected = 3 + 2 + pieces + 1 + 2 + 2  # utf8, nul, long pieces + "next line", truncated
    collector.wait_for(expected)
    metrics = shipper.metrics()
    assert metrics["shipper_invalid_utf8_lines_total"] == 2
    assert metrics["shipper_nul_lines_total"] == 2
    assert metrics["shipper_long_lines_total"] == 1
    assert metrics["shipper_truncations_total"] == 1
    assert metrics["shipper_truncations_without_copy_total"] == 1
    assert shipper.proc.alive()
    peak = shipper.peak_rss()
    assert peak < 64 * 1024 * 1024, f"peak RSS {peak / 2**20:.1f} MiB"
    # The 40 MiB line never sat in memory: shipping it took a few batches' worth (the
    # default 512 KiB; ~4 MiB, as for a 10 MiB line), not a share of the line's size.
    growth = peak - baseline
    assert growth < line_bytes // 5, f"peak RSS grew by {growth / 2**20:.1f} MiB"
    assert shipper.proc.stop() == 0  # once it has exited, no duplicate can still arrive
    records = collector.records()
    assert len(records) == expected
    by_file: dict[str, list[str]] = {}
    for record in records:
        by_file.setdefault(Path(record["file"]).name, []).append(record["log"])
    assert by_file["utf8.log"] == ["ok", "bad \ufffd\ufffd\ufffd end", "also \ufffd bad"]
    assert by_file["nul.log"] == ["nul \x00 inside", "\x00\x00\x00"]
    long_pieces = by_file["long.log"]
    assert long_pieces[-1] == "next line"
    assert "".join(long_pieces[:-1]) == "L" * line_bytes
    assert max(len(p) for p in long_pieces) <= 64 * 1024
    assert by_file["truncated.log"] == ["before 1", "before 2", "half a li", "after"]


def test_sigterm_ships_everything_then_exits_0(service, tmp_path, logs):
    total = 100_000
    with open(logs / "app.log", "wb") as handle:
        for start in range(0, total, 1000):
            handle.write(b"".join(seq_line(s) for s in range(start, start + 1000)))
    collector = Collector(service, tmp_path).start()
    shipper = Shipper(service, tmp_path, collector, str(logs / "app.log")).start()
    wait_until(lambda: collector.count() > 0, what="shipping to start")
    shipper.proc.signal(signal.SIGTERM)
    assert shipper.proc.wait(30) == 0
    assert collector.count() == total
    assert_exactly_once(collector, total)
    saved = json.loads((tmp_path / "shipper-state" / "checkpoints.json").read_text())["files"]
    assert [f["offset"] for f in saved] == [(logs / "app.log").stat().st_size]


def test_shared_key_handshake_and_a_wrong_key_is_retried_not_dropped(service, tmp_path, logs):
    (logs / "app.log").write_bytes(b"".join(seq_line(s) for s in range(1000)))
    collector = Collector(service, tmp_path)
    collector.extra_env = {"COLLECTOR_SHARED_KEY": "s3cret"}
    collector.start()
    wrong = Shipper(
        service,
        tmp_path,
        collector,
        str(logs / "app.log"),
        FLUENT_SHARED_KEY="wrong",
        SHIPPER_SHUTDOWN_TIMEOUT="2",
    ).start()
    wait_until(
        lambda: wrong.metrics().get('shipper_retries_total{reason="HandshakeError"}', 0) >= 2,
        what="handshake failures",
    )
    assert collector.count() == 0
    assert http_ok(f"http://127.0.0.1:{wrong.http_port}/readyz")
    stopping = time.monotonic()
    assert wrong.proc.stop() == 0  # gives up after SHIPPER_SHUTDOWN_TIMEOUT, keeps position
    assert time.monotonic() - stopping < 5
    right = Shipper(
        service, tmp_path, collector, str(logs / "app.log"), FLUENT_SHARED_KEY="s3cret"
    ).start()
    collector.wait_for(1000)
    assert_exactly_once(collector, 1000)
    assert right.proc.stop() == 0


def test_a_batch_of_empty_lines_goes_as_several_requests_collectors_accept(service, tmp_path, logs):
    (logs / "app.log").write_bytes(b"\n" * 200_000)  # 200,000 events in one 256 KiB batch
    collector = Collector(service, tmp_path)
    # ~10 MiB on the wire: every request must stay within 1 MiB of entries (plus the
    # tag and options), or this collector rejects it.
    collector.extra_env = {"COLLECTOR_MAX_FRAME_BYTES": str(1024 * 1024 + 2048)}
    collector.start()
    shipper = Shipper(
        service, tmp_path, collector, str(logs / "app.log"), SHIPPER_BATCH_BYTES="262144"
    ).start()
    collector.wait_for(200_000)
    # The collector counts a request before the shipper has read its ack.
    wait_until(lambda: shipper.metrics()["shipper_events_acked_total"] == 200_000,
               what="every event acked")
    metrics = shipper.metrics()
    assert metrics["shipper_batches_acked_total"] == 10, "at most 20,000 lines per batch"
    assert sum(v for k, v in metrics.items() if k.startswith("shipper_retries_total")) == 0
    frames = requests.get(f"http://127.0.0.1:{collector.http_port}/metrics", timeout=5).text
    [sent] = re.findall(r'^collector_frames_received_total\{.*\} (\S+)$', frames, re.M)
    assert float(sent) >= 10
    assert shipper.proc.stop() == 0
    assert collector.count() == 200_000


def test_sigterm_delivers_the_unterminated_last_line_once_and_a_later_rest_once(
    service, tmp_path, logs
):
    """A Job's app may exit without a final newline: at SIGTERM the shipper delivers the
    incomplete last line (the file is quiet) and checkpoints past it. If the app later
    completes that line and writes more, the rest of the line arrives as a record of its
    own after the restart: nothing is delivered twice, nothing is lost."""
    app = logs / "app.log"
    app.write_bytes(b"".join(seq_line(s) for s in range(1000)) + b"000001000 begin")
    collector = Collector(service, tmp_path).start()
    shipper = Shipper(service, tmp_path, collector, str(app)).start()
    collector.wait_for(1000)
    stopping = time.monotonic()
    shipper.proc.signal(signal.SIGTERM)
    assert shipper.proc.wait(30) == 0
    assert time.monotonic() - stopping < 10  # SHIPPER_ROTATE_WAIT (1 s) of quiet, then out
    logged = [r["log"] for r in collector.records()]
    assert logged == [seq_line(s).decode()[:-1] for s in range(1000)] + ["000001000 begin"]
    saved = json.loads((tmp_path / "shipper-state" / "checkpoints.json").read_text())["files"]
    assert [f["offset"] for f in saved] == [app.stat().st_size]

    with open(app, "ab") as handle:  # the app completes the line, then goes on
        handle.write(b" end\n" + b"".join(seq_line(s) for s in range(1001, 2000)))
    shipper = Shipper(service, tmp_path, collector, str(app)).start()
    collector.wait_for(2000)
    assert shipper.proc.stop() == 0  # once it has exited, no duplicate can still arrive
    logged = [r["log"] for r in collector.records()]
    assert logged == (
        [seq_line(s).decode()[:-1] for s in range(1000)]
        + ["000001000 begin", " end"]
        + [seq_line(s).decode()[:-1] for s in range(1001, 2000)]
    )


class ForwardStub(threading.Thread):
    """A minimal Forward server that records every request it reads and answers (or
    not) as `policy(n)` says for the n-th request (0-based): "ack", "withhold" (never
    answer), "late" (answer after `late_delay`, when the client has given up) or "slow"
    (answer after `slow_delay`, in time)."""

    def __init__(self, policy, late_delay: float = 0.0, slow_delay: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.policy, self.late_delay, self.slow_delay = policy, late_delay, slow_delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.forward_port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.requests: list[tuple[str, list[str]]] = []  # (answer, lines) in arrival order

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        unpacker = protocol.new_unpacker(16 * 1024 * 1024)
        with conn:
            while data := conn.recv(65536):
                unpacker.feed(data)
                for obj in unpacker:
                    request = protocol.decode_request(obj)
                    assert request is not None and request.chunk is not None
                    with self.lock:
                        answer = self.policy(len(self.requests))
                        self.requests.append((answer, [r["log"] for _, r in request.events]))
                    if answer == "withhold":
                        continue
                    time.sleep({"late": self.late_delay, "slow": self.slow_delay}.get(answer, 0))
                    with contextlib.suppress(OSError):  # "late": the client has left
                        conn.sendall(protocol.encode_ack(request.chunk))

    def close(self) -> None:
        self.listener.close()


def test_unacknowledged_batches_are_sent_again_until_acked(service, tmp_path, logs):
    total = 5000
    (logs / "app.log").write_bytes(b"".join(seq_line(s) for s in range(total)))
    answers = ["withhold", "withhold", "late", "slow"]
    stub = ForwardStub(
        # Seconds of margin on both sides of the 2 s ack timeout: a busy machine must not
        # turn the slow ack into a timeout, or the late one into an ack in time.
        lambda n: answers[n] if n < len(answers) else "ack", late_delay=4.0, slow_delay=0.2
    )
    stub.start()
    shipper = Shipper(
        service, tmp_path, stub, str(logs / "app.log"),
        SHIPPER_ACK_TIMEOUT="2", SHIPPER_BATCH_BYTES="65536", SHIPPER_RETRY_MIN="0.1",
    ).start()
    wait_until(
        lambda: shipper.metrics().get("shipper_events_acked_total", 0) == total,
        timeout=30, what="every line acked",
    )
    metrics = shipper.metrics()
    retries = {k: v for k, v in metrics.items() if k.startswith("shipper_retries_total")}
    # Withheld twice, acked too late once: three ack timeouts; the slow ack was in time.
    assert retries == {'shipper_retries_total{reason="AckTimeout"}': 3.0}
    assert metrics["shipper_collector_up"] == 1
    assert shipper.proc.stop() == 0
    stub.close()
    with stub.lock:
        received = list(stub.requests)
    acked = [lines for answer, lines in received if answer in ("ack", "slow")]
    # Every line acknowledged exactly once, in order...
    assert [line for lines in acked for line in lines] == [
        seq_line(s).decode()[:-1] for s in range(total)
    ]
    # ...and the only repeats are the unacknowledged sends of the first batch.
    assert [answer for answer, _ in received[:4]] == answers
    assert all(lines == received[0][1] for _, lines in received[:4])
    assert sum(len(lines) for _, lines in received) == total + 3 * len(received[0][1])


def test_a_batch_carries_the_lines_of_many_files_with_one_ack_and_one_request(
    service, tmp_path, logs
):
    """Following many files must not cost an ack round trip and a checkpoint save per
    file: a batch holds the chunks of every file that has lines ready, up to its limits.

    Every file is there before the shipper starts, so its first scan opens all of them and
    its first read finds lines; each further read takes the next file that has unread
    lines, and only when none has does the batch end. All the lines (240 KB, 2,000 lines)
    fit in one batch (512 KiB, 20,000 lines) and, under one tag, in one request (1 MiB of
    entries, 50,000 events). Files are longer than the 1 KiB fingerprint, so each is read
    whole at once."""
    files, per_file = 200, 10
    for index in range(files):
        lines = range(index * per_file, (index + 1) * per_file)
        (logs / f"f{index:03d}.log").write_bytes(b"".join(seq_line(s) for s in lines))
    total = files * per_file
    collector = Collector(service, tmp_path).start()
    shipper = Shipper(service, tmp_path, collector, str(logs / "*.log")).start()
    collector.wait_for(total)
    # The collector counts a request before the shipper has read its ack.
    wait_until(lambda: shipper.metrics().get("shipper_events_acked_total") == total,
               what="every event acked")
    # One batch for all 200 files (one per file before batches could span files).
    assert shipper.metrics()["shipper_batches_acked_total"] == 1
    frames = requests.get(f"http://127.0.0.1:{collector.http_port}/metrics", timeout=5).text
    [received] = re.findall(r'^collector_frames_received_total\{.*\} (\S+)$', frames, re.M)
    assert float(received) == 1, "the files' entries joined into one request"
    assert shipper.proc.stop() == 0  # once it has exited, no duplicate can still arrive
    assert_exactly_once(collector, total)
    # Each record names its own file, and each file's lines arrived in their order.
    by_file: dict[str, list[int]] = {}
    for record in collector.records():
        by_file.setdefault(record["file"], []).append(int(record["log"][:9]))
    assert by_file == {
        str(logs / f"f{index:03d}.log"): list(range(index * per_file, (index + 1) * per_file))
        for index in range(files)
    }
    saved = json.loads((tmp_path / "shipper-state" / "checkpoints.json").read_text())["files"]
    sizes = {str(path): path.stat().st_size for path in logs.glob("*.log")}
    assert {f["path"]: f["offset"] for f in saved} == sizes, "every file checkpointed at its end"
