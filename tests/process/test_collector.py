"""The log-collector as a real process, driven by real Forward clients: fluent-logger for
Python (Message mode), fluent-logger for Node (every mode, acks, shared key), our own
ForwardClient, and hand-made hostile requests. Assertions are on what a user relies on:
the records in the data files and the HTTP API, acks, rejections in /metrics, restarts."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import requests
import yaml
from fluent.sender import EventTime, FluentSender

from patterns.common.forward import protocol
from patterns.common.forward.client import ForwardClient, ForwardError, HandshakeError
from tests.conftest import ROOT, free_port, http_ok, require_tool, wait_until

INTEROP = Path(__file__).parent / "forward_interop"
MODULE = "patterns.sidecar.collector"


@dataclass
class Collector:
    proc: Any
    forward_port: int
    http_port: int
    data_dir: Path
    env: dict[str, str]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def get(self, path: str) -> Any:
        response = requests.get(self.url(path), timeout=5)
        response.raise_for_status()
        return response.json()

    def counts(self) -> dict[str, Any]:
        return self.get("/api/counts")

    def stored(self) -> list[dict[str, Any]]:
        """Every record in the data files, in file order."""
        lines: list[str] = []
        for path in sorted(self.data_dir.glob("records-*.jsonl")):
            lines.extend(line for line in path.read_text().splitlines() if line)
        return [json.loads(line) for line in lines]

    def metric(self, name: str, **labels: str) -> float:
        text = requests.get(self.url("/metrics"), timeout=5).text
        total = 0.0
        for line in text.splitlines():
            match = re.match(rf"^{name}(\{{.*\}})? (\S+)$", line)
            if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
                total += float(match.group(2))
        return total

    def client(self, **kwargs: Any) -> ForwardClient:
        return ForwardClient("127.0.0.1", self.forward_port, self_hostname="test-client", **kwargs)


@pytest.fixture
def collector(service: Callable[..., Any], tmp_path: Path) -> Iterator[Callable[..., Collector]]:
    """Factory: start a collector (same data dir on every call within a test, so a second
    call is a restart) and wait until it is ready."""

    def start(**extra: str) -> Collector:
        forward_port, http_port = free_port(), free_port()
        env = {
            "COLLECTOR_FORWARD_HOST": "127.0.0.1",
            "COLLECTOR_FORWARD_PORT": str(forward_port),
            "COLLECTOR_HTTP_HOST": "127.0.0.1",
            "COLLECTOR_HTTP_PORT": str(http_port),
            "COLLECTOR_DATA_DIR": str(tmp_path / "data"),
            "COLLECTOR_HOSTNAME": "collector.test",
            **extra,
        }
        proc = service(MODULE, env)
        found = Collector(proc, forward_port, http_port, tmp_path / "data", env)
        # Our own process's word first: a port from free_port() can be taken by another
        # process on this shared machine, whose /readyz would answer for us.
        wait_until(
            lambda: '"collector ready"' in proc.output() or not proc.alive(),
            what="collector ready",
        )
        assert proc.alive(), proc.output()
        assert http_ok(found.url("/readyz")), proc.output()
        return found

    yield start


def packed(lines: list[str], path: str = "/var/log/app.log") -> bytes:
    now = time.time()
    return b"".join(
        msgpack.packb([EventTime(now), {"log": line, "file": path}], use_bin_type=True)
        for line in lines
    )


# --- (a) fluent-logger for Python, Message mode -------------------------------------------


def test_python_fluent_logger_records_are_stored(collector: Callable[..., Collector]) -> None:
    c = collector()
    sender = FluentSender("py", host="127.0.0.1", port=c.forward_port, nanosecond_precision=True)
    try:
        for i in range(20):
            assert sender.emit("app", {"message": f"hello {i}", "seq": i}), sender.last_error
    finally:
        sender.close()
    # Its default: integer seconds instead of EventTime.
    seconds = FluentSender("py", host="127.0.0.1", port=c.forward_port)
    try:
        assert seconds.emit("seconds", {"message": "whole seconds"}), seconds.last_error
    finally:
        seconds.close()
    wait_until(lambda: c.counts()["total"] == 21, what="21 events counted")
    [whole] = [r for r in c.stored() if r["tag"] == "py.seconds"]
    assert whole["time"] == int(whole["time"]) and abs(whole["time"] - time.time()) < 60
    stored = [r for r in c.stored() if r["tag"] == "py.app"]
    assert [r["record"] for r in stored] == [{"message": f"hello {i}", "seq": i} for i in range(20)]
    assert {r["tag"] for r in stored} == {"py.app"}
    assert all(abs(r["time"] - time.time()) < 60 for r in stored)
    api = c.get("/api/records?tag=py.app&limit=5")["records"]
    assert [r["record"]["seq"] for r in api] == [15, 16, 17, 18, 19]  # newest last
    assert c.counts() == {
        "tags": {"py.app": 20, "py.seconds": 1}, "total": 21, "other": 0, "distinct_tags": 2
    }


# --- (b) fluent-logger for Node: every mode, acks, shared key ------------------------------


@pytest.fixture(scope="module")
def node_sender() -> Callable[..., dict[str, Any]]:
    node = require_tool("node", "install Node.js 20 (apt-get install nodejs npm)")
    npm = require_tool("npm", "install npm (apt-get install npm)")
    if not (INTEROP / "node_modules" / "fluent-logger").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=INTEROP, check=True, timeout=300)

    def send(**args: Any) -> dict[str, Any]:
        done = subprocess.run(
            [node, "send.js", json.dumps(args)],
            cwd=INTEROP,
            capture_output=True,
            text=True,
            timeout=30,
        )
        lines = done.stdout.strip().splitlines()
        assert lines, f"send.js printed nothing; stderr: {done.stderr}"
        return json.loads(lines[-1])

    return send


NODE_MODES = ["Message", "Forward", "PackedForward", "CompressedPackedForward"]


def test_node_fluent_logger_every_mode_with_acks_and_shared_key(
    collector: Callable[..., Collector], node_sender: Callable[..., dict[str, Any]]
) -> None:
    c = collector(COLLECTOR_SHARED_KEY="interop-key")
    for mode in NODE_MODES:
        result = node_sender(
            port=c.forward_port, mode=mode, tag=f"node.{mode}", count=25, sharedKey="interop-key"
        )
        assert result == {"ok": True, "acked": 25}, mode
    stored = c.stored()
    for mode in NODE_MODES:
        mine = [r for r in stored if r["tag"] == f"node.{mode}"]
        assert [r["record"]["seq"] for r in mine] == list(range(25)), mode
        assert mine[3]["record"]["message"] == f"node.{mode} event 3"
        assert all(abs(r["time"] - time.time()) < 60 for r in mine)
    assert c.counts()["total"] == 100
    for wire_mode in ("message", "forward", "packed_forward", "compressed_packed_forward"):
        assert c.metric("collector_events_received_total", mode=wire_mode) == 25, wire_mode
    # Message mode acks each event, the others one request of 25.
    assert c.metric("collector_acks_sent_total") == 25 + 3


def test_node_fluent_logger_with_a_wrong_shared_key_is_refused(
    collector: Callable[..., Collector], node_sender: Callable[..., dict[str, Any]]
) -> None:
    c = collector(COLLECTOR_SHARED_KEY="interop-key")
    for mode in ("PackedForward", "Forward"):
        result = node_sender(port=c.forward_port, mode=mode, tag="x", count=2, sharedKey="nope")
        assert result["ok"] is False
        assert "shared key mismatch" in result["error"]
    assert c.counts()["total"] == 0
    assert c.metric("collector_rejected_frames_total", reason="auth_failed") == 2


# --- (c) our ForwardClient ----------------------------------------------------------------


def test_forward_client_without_shared_key(collector: Callable[..., Collector]) -> None:
    c = collector()
    with c.client() as client:
        client.send_packed("app.plain", packed(["a", "b", "c"]), 3)
        # The ack means stored: the lines are in the files the moment the call returns.
        assert [r["record"]["log"] for r in c.stored()] == ["a", "b", "c"]
        client.send_packed("app.gz", packed(["d", "e"]), 2, compressed=True)
        assert [r["record"]["log"] for r in c.stored()] == ["a", "b", "c", "d", "e"]
    assert c.counts() == {
        "tags": {"app.gz": 2, "app.plain": 3}, "total": 5, "other": 0, "distinct_tags": 2
    }
    with pytest.raises(HandshakeError, match="did not send HELO"):
        c.client(shared_key="k", connect_timeout=0.5).send_packed("x", packed(["x"]), 1)
    assert c.stored()[0]["record"] == {"log": "a", "file": "/var/log/app.log"}


def test_forward_client_with_shared_key_and_users(collector: Callable[..., Collector]) -> None:
    c = collector(COLLECTOR_SHARED_KEY="k3y", COLLECTOR_USERS="alice:wonder")
    with c.client(shared_key="k3y", username="alice", password="wonder") as client:
        client.send_packed("secure", packed(["one"]), 1)
        client.send_packed("secure", packed(["two"]), 1, compressed=True)
    assert [r["record"]["log"] for r in c.stored()] == ["one", "two"]

    with pytest.raises(HandshakeError, match="shared key mismatch"):
        c.client(shared_key="wrong", username="alice", password="wonder").send_packed(
            "secure", packed(["x"]), 1
        )
    with pytest.raises(HandshakeError, match="username/password mismatch"):
        c.client(shared_key="k3y", username="alice", password="guess").send_packed(
            "secure", packed(["x"]), 1
        )
    with pytest.raises(HandshakeError, match="requires the shared-key handshake"):
        c.client().send_packed("secure", packed(["x"]), 1)
    assert c.counts()["total"] == 2


def test_forward_client_reconnects_after_a_collector_restart(
    collector: Callable[..., Collector],
) -> None:
    first = collector(COLLECTOR_SHARED_KEY="k")
    client = ForwardClient(
        "127.0.0.1", first.forward_port, shared_key="k", self_hostname="c", ack_timeout=3
    )
    client.send_packed("r", packed(["before"]), 1)
    assert first.proc.stop() == 0
    second = collector(COLLECTOR_SHARED_KEY="k", COLLECTOR_FORWARD_PORT=str(first.forward_port))
    # The old connection was closed by the stopping collector: the client notices before
    # sending, reconnects and handshakes again.
    client.send_packed("r", packed(["after"]), 1)
    client.close()
    assert [r["record"]["log"] for r in second.stored()] == ["before", "after"]
    second.proc.stop()
    with pytest.raises(ForwardError, match="cannot connect"):
        client.send_packed("r", packed(["nobody listening"]), 1)


def test_forward_client_reconnects_when_the_collector_closed_an_idle_connection(
    collector: Callable[..., Collector],
) -> None:
    c = collector(COLLECTOR_IDLE_TIMEOUT="0.3", COLLECTOR_SHARED_KEY="k")
    with c.client(shared_key="k") as client:
        client.send_packed("idle", packed(["first"]), 1)
        # The collector closes the silent connection; wait until it has, so the next
        # send really meets a closed connection (not one a late sweep closes mid-send).
        wait_until(lambda: c.metric("collector_connections") == 0, what="idle connection closed")
        client.send_packed("idle", packed(["second"]), 1)  # no error: a fresh connection
    assert [r["record"]["log"] for r in c.stored()] == ["first", "second"]


# --- (d) malformed and hostile requests -----------------------------------------------------


def big_declared_bin() -> bytes:
    return b"\x93\xa1t\xc6" + (2**31).to_bytes(4, "big") + os.urandom(2 * 1024 * 1024)


HOSTILE: dict[str, tuple[bytes, str]] = {
    "garbage": (b"\xc1" + os.urandom(4096), "bad_msgpack"),
    "wrong types": (msgpack.packb([1, 2, 3]), "bad_tag"),
    "not an array": (msgpack.packb("GET / HTTP/1.1"), "bad_request"),
    "deep nesting": (b"\x91" * 100_000, "bad_msgpack"),
    # Nothing is allocated for a declared length: the request just never completes.
    "huge declared array": (b"\x93\xa1t\xdd\xff\xff\xff\xff", "frame_timeout"),
    "huge declared bin": (big_declared_bin(), "too_large"),
    "too many entries": (
        protocol.encode_packed_forward("t", packed(["x"] * 1001), 1001, "c"),
        "too_many_entries",
    ),
    "bad gzip": (msgpack.packb(["t", b"\x1f\x8bnot gzip", {"compressed": "gzip"}]), "bad_gzip"),
    "gzip bomb": (
        msgpack.packb(
            ["t", gzip.compress(b"\x00" * (200 * 1024 * 1024), 9), {"compressed": "gzip"}]
        ),
        "too_large",
    ),
    "truncated entries": (msgpack.packb(["t", packed(["a", "b"])[:-4]]), "bad_entry"),
    "record too deep for JSON": (
        b"\x94\xa1t\x01" + b"\x81\xa1a" * 1020 + b"\xc0" + msgpack.packb({"chunk": "c"}),
        "bad_record",
    ),
}


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident memory now (VmRSS) or at its peak so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def closed_by_server(sock: socket.socket, timeout: float = 10.0) -> bool:
    """True once the server has closed the connection (nothing is ever sent back)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_hostile_requests_are_closed_counted_and_others_keep_being_served(
    collector: Callable[..., Collector],
) -> None:
    c = collector(
        COLLECTOR_MAX_FRAME_BYTES=str(1024 * 1024),
        COLLECTOR_MAX_DECOMPRESSED_BYTES=str(4 * 1024 * 1024),
        COLLECTOR_MAX_ENTRIES="1000",
        COLLECTOR_IDLE_TIMEOUT="1",
        COLLECTOR_FRAME_TIMEOUT="1",
    )
    good = c.client()
    good.send_packed("good", packed(["warm-up"]), 1)
    rss_before = rss_bytes(c.proc.pid)
    sent = 0
    for round_ in range(3):  # repeated, so a leak would show in RSS
        for name, (payload, _) in HOSTILE.items():
            with socket.create_connection(("127.0.0.1", c.forward_port), timeout=10) as sock:
                # Closed by the server while we were still sending is just as good.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.sendall(payload)
                assert closed_by_server(sock), name
            sent += 1
            # A client on another connection is still served, on the same socket as before.
            good.send_packed("good", packed([f"{round_}-{name}"]), 1)
    good.close()
    for name, (_, reason) in HOSTILE.items():
        assert c.metric("collector_rejected_frames_total", reason=reason) >= 3, name
    assert c.metric("collector_rejected_frames_total") == sent
    assert c.counts()["tags"] == {"good": 1 + sent}
    assert c.proc.alive()
    growth = rss_bytes(c.proc.pid) - rss_before
    assert growth < 64 * 1024 * 1024, f"RSS grew by {growth / 2**20:.0f} MiB"
    assert "rejected client request" in c.proc.output()
    assert "127.0.0.1:" in c.proc.output()  # the peer is in the log line


def manifest_collector() -> tuple[dict[str, str], int]:
    """The collector container's env in k8s/sidecar/base, and the memory its process may
    use there: the container's limit minus its memory-backed volumes."""
    docs = yaml.safe_load_all((ROOT / "k8s/sidecar/base/log-collector.yaml").read_text())
    [spec] = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]
    [container] = spec["containers"]
    units = {"Mi": 2**20, "Gi": 2**30}

    def quantity(text: str) -> int:
        return int(text[:-2]) * units[text[-2:]]

    tmpfs = sum(
        quantity(v["emptyDir"]["sizeLimit"])
        for v in spec["volumes"]
        if v.get("emptyDir", {}).get("medium") == "Memory"
    )
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    return env, quantity(container["resources"]["limits"]["memory"]) - tmpfs


def read_ack(sock: socket.socket, timeout: float = 60.0) -> str:
    unpacker = msgpack.Unpacker(raw=False)
    sock.settimeout(timeout)
    while True:
        for obj in unpacker:
            return protocol.decode_ack(obj)
        data = sock.recv(4096)
        assert data, "closed without an ack"
        unpacker.feed(data)


def test_with_the_manifest_limits_every_connection_busy_stays_under_the_memory_limit(
    collector: Callable[..., Collector],
) -> None:
    env, budget = manifest_collector()
    limits = {k: v for k, v in env.items() if k.startswith("COLLECTOR_MAX_")}
    # Deadlines are not what this test is about: the hogs may wait as long as it takes.
    c = collector(**limits, COLLECTOR_FRAME_TIMEOUT="120")
    connections = int(env["COLLECTOR_MAX_CONNECTIONS"])
    frame = int(env["COLLECTOR_MAX_FRAME_BYTES"])
    values = int(env["COLLECTOR_MAX_VALUES"])
    # The costliest requests that fit a frame: as many empty-line events as it holds, and
    # records of short non-Latin-1 strings up to the value limit (~85 bytes each decoded).
    empty = packed([""])
    empty_count = min((frame - 1024) // len(empty), (values - 16) // 8)  # 8 values each
    strings = msgpack.packb([EventTime(time.time()), {"s": ["\u0100"] * 1000}])
    strings_count = values // 1010
    costly = [
        (empty * empty_count, empty_count),
        (strings * strings_count, strings_count),
    ]
    good = c.client()
    good.send_packed("good", packed(["before"]), 1)
    # As many as the bytes waiting over all connections may hold, each held partial.
    hogs = []
    held = 0
    for i in range(int(env["COLLECTOR_MAX_BUFFERED_BYTES"]) // frame):
        entries, count = costly[i % 2]
        request = protocol.encode_packed_forward("hog", entries, count, f"hog-{i}")
        assert len(request) <= frame
        sock = socket.create_connection(("127.0.0.1", c.forward_port), timeout=30)
        sock.sendall(request[:-1])  # all but the last byte: held in the collector's buffer
        hogs.append((sock, request[-1:], f"hog-{i}", count))
        held += len(request) - 1
    wait_until(lambda: c.metric("collector_buffered_bytes") == held, what="the hogs' bytes held")
    # Every other connection taken, silent.
    idle = [
        socket.create_connection(("127.0.0.1", c.forward_port), timeout=10)
        for _ in range(connections - len(hogs) - 1)
    ]
    wait_until(
        lambda: c.metric("collector_connections") == connections, what="every connection open"
    )
    # One connection more is let in: the connection idle the longest (the good client's)
    # gives way. The good client, reconnecting, takes the place of the next idle one; the
    # hogs, receiving, keep their bytes.
    extra = socket.create_connection(("127.0.0.1", c.forward_port), timeout=10)
    evicted = "collector_evicted_connections_total"
    wait_until(lambda: c.metric(evicted, state="idle") == 1, what="the good client's turn")
    good.send_packed("good", packed(["while every connection is taken"]), 1)
    assert closed_by_server(idle[0])
    assert c.metric(evicted, state="idle") == 2 and c.metric(evicted, state="receiving") == 0
    extra.close()
    # Then every large request completes at once: decoded and stored a few at a time.
    for sock, last, _, _ in hogs:
        sock.sendall(last)
    for sock, _, chunk, _ in hogs:
        assert read_ack(sock) == chunk
        sock.close()
    good.send_packed("good", packed(["after"]), 1)
    good.close()
    for sock in idle:
        sock.close()
    peak = rss_bytes(c.proc.pid, "VmHWM")
    assert peak < budget, f"peak RSS {peak / 2**20:.0f} MiB, limit {budget / 2**20:.0f} MiB"
    assert c.counts()["tags"] == {"good": 3, "hog": sum(h[3] for h in hogs)}
    assert c.metric("collector_rejected_frames_total") == 0


def test_silent_connections_are_closed_after_the_idle_timeout(
    collector: Callable[..., Collector],
) -> None:
    c = collector(COLLECTOR_IDLE_TIMEOUT="0.5")
    with socket.create_connection(("127.0.0.1", c.forward_port), timeout=5) as sock:
        started = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(1) == b""
        assert time.monotonic() - started < 3


# --- (e) restart ------------------------------------------------------------------------------


def test_restart_keeps_stored_records_and_counts(collector: Callable[..., Collector]) -> None:
    first = collector()
    with first.client() as client:
        client.send_packed("web", packed([f"web {i}" for i in range(30)]), 30)
        client.send_packed("db", packed([f"db {i}" for i in range(12)]), 12, compressed=True)
    before_records = first.get("/api/records?limit=50")["records"]
    assert first.proc.stop() == 0
    # A crash in the middle of a write leaves a partial line that was never acked.
    [segment] = first.data_dir.glob("records-*.jsonl")
    with open(segment, "ab") as handle:
        handle.write(b'{"tag":"web","time":1.0,"rec')

    second = collector()
    assert second.counts() == {
        "tags": {"db": 12, "web": 30}, "total": 42, "other": 0, "distinct_tags": 2
    }
    assert second.get("/api/records?limit=50")["records"] == before_records
    with second.client() as client:
        client.send_packed("web", packed(["after restart"]), 1)
    assert second.counts()["total"] == 43
    logs = [r["record"]["log"] for r in second.stored()]
    assert logs[-2:] == ["db 11", "after restart"]  # the partial line is gone
    assert second.get("/api/records?tag=web&limit=2")["records"][-1]["record"]["log"] == (
        "after restart"
    )


def test_restart_with_many_segments_keeps_counts_and_order(
    collector: Callable[..., Collector],
) -> None:
    first = collector(COLLECTOR_SEGMENT_BYTES="8192", COLLECTOR_RECENT_RECORDS="50")
    with first.client() as client:
        for i in range(40):
            tag = "even" if i % 2 == 0 else "odd"
            client.send_packed(tag, packed([f"{i}-{j}" for j in range(10)]), 10)
    assert len(list(first.data_dir.glob("records-*.jsonl"))) > 3  # it did rotate
    stored = [r["record"]["log"] for r in first.stored()]
    assert stored == [f"{i}-{j}" for i in range(40) for j in range(10)]
    newest = first.get("/api/records?limit=50")["records"]
    assert first.proc.stop() == 0

    second = collector(COLLECTOR_SEGMENT_BYTES="8192", COLLECTOR_RECENT_RECORDS="50")
    assert second.counts() == {
        "tags": {"even": 200, "odd": 200}, "total": 400, "other": 0, "distinct_tags": 2
    }
    assert second.get("/api/records?limit=50")["records"] == newest
    assert [r["record"]["log"] for r in newest[-2:]] == ["39-8", "39-9"]


def test_records_of_a_rare_tag_are_found_behind_busier_ones(
    collector: Callable[..., Collector],
) -> None:
    c = collector(COLLECTOR_RECENT_RECORDS="20", COLLECTOR_SEGMENT_BYTES="8192")
    with c.client() as client:
        client.send_packed("rare", packed(["rare 1", "rare 2"]), 2)
        for i in range(10):
            client.send_packed("busy", packed([f"busy {i}-{j}" for j in range(30)]), 30)
    rare = c.get("/api/records?tag=rare&limit=5")["records"]
    assert [r["record"]["log"] for r in rare] == ["rare 1", "rare 2"]
    busy = c.get("/api/records?tag=busy&limit=3")["records"]
    assert [r["record"]["log"] for r in busy] == ["busy 9-27", "busy 9-28", "busy 9-29"]
    assert c.get("/api/records?tag=none&limit=5")["records"] == []


def test_http_page_api_errors_and_graceful_stop(collector: Callable[..., Collector]) -> None:
    c = collector()
    page = requests.get(c.url("/"), timeout=5)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    # Served as a page: its policy admits its own inline script (the APIs' admits none).
    assert "script-src 'sha256-" in page.headers["Content-Security-Policy"]
    assert "api/records" in page.text and "api/counts" in page.text
    bad = requests.get(c.url("/api/records?limit=zero"), timeout=5)
    assert bad.status_code == 400 and "limit" in bad.json()["error"]
    assert c.get("/api/records") == {"records": []}
    c.proc.signal(signal.SIGTERM)
    assert c.proc.wait(15) == 0
    assert '"stopped"' in c.proc.output()


def test_bad_settings_and_unusable_data_dir_stop_the_collector_with_a_clear_message(
    service: Callable[..., Any], tmp_path: Path
) -> None:
    bad = service(MODULE, {"COLLECTOR_FORWARD_PORT": "0", "COLLECTOR_USERS": "bob"})
    assert bad.wait(15) == 2
    assert "COLLECTOR_FORWARD_PORT" in bad.output() and "COLLECTOR_USERS" in bad.output()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    unusable = service(
        MODULE,
        {
            "COLLECTOR_DATA_DIR": str(blocker / "data"),
            "COLLECTOR_FORWARD_PORT": str(free_port()),
            "COLLECTOR_HTTP_PORT": str(free_port()),
        },
    )
    # A directory it cannot use is a configuration error like any other: exit 2, named.
    assert unusable.wait(15) == 2
    assert f"COLLECTOR_DATA_DIR={blocker / 'data'}: Not a directory" in unusable.output()
