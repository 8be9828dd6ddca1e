#!/usr/bin/env python3
"""The log-collector under hostile floods: its peak memory, its disk, and how long a
well-behaved client waits for an ack while others try to lock it out.

Each scenario starts a fresh collector process (from this tree, or from `--root`, e.g. an
older checkout, to compare) and prints what it measured:

- `partial-frames`: 20 connections each send all but the last byte of a 16 MiB
  PackedForward request (defaults, except a frame limit large enough to hold them);
- `partial-objects`: 4 connections each send 2 MiB of a Forward-mode request made of empty
  maps (msgpack builds a Python object per byte as the frame arrives);
- `gzip-objects`: 8 connections each send one small CompressedPackedForward request whose
  entries expand to 100,000 records of nested maps (within the default limits of the
  collector measured);
- `gzip-strings`: the same with 100,000 records of one long string each;
- `disk`: gzip requests of records of NUL characters (6 bytes of JSON each) for `--seconds`,
  with the manifest's settings: bytes sent, bytes on disk at the end and at most;
- `disk-mixed`: the same with a quarter of NULs (2.25 times the request as JSON, under the
  collector's 4 times): run it long enough (`--seconds 20`) to see retention at work;
- `lockout`: 300 idle sockets plus 20 sockets trickling one byte a second; then a
  ForwardClient sends one request and retries until acked or `--lockout-wait` seconds.

Peak RSS is the collector's VmHWM. These are figures to read, not pass/fail checks: the
tests hold the bounds (tests/process/test_collector_hostile.py). The manifest's settings
are read from k8s/sidecar/base/log-collector.yaml next to this script.

    .venv/bin/python benchmarks/collector_floods.py [--root DIR] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import yaml
from fluent.sender import EventTime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from measure import free_port  # noqa: E402

from patterns.common.forward import protocol  # noqa: E402
from patterns.common.forward.client import ForwardClient, ForwardError  # noqa: E402

MIB = 1024 * 1024


def manifest_env() -> dict[str, str]:
    docs = yaml.safe_load_all((ROOT / "k8s/sidecar/base/log-collector.yaml").read_text())
    [spec] = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]
    [container] = spec["containers"]
    own = ("COLLECTOR_DATA_DIR", "COLLECTOR_FORWARD_PORT", "COLLECTOR_HTTP_PORT")
    return {
        item["name"]: item["value"]
        for item in container["env"]
        if item["name"].startswith("COLLECTOR_") and "value" in item and item["name"] not in own
    }


class Collector:
    def __init__(self, root: Path, data: str, env: dict[str, str]) -> None:
        self.port, self.http = free_port(), free_port()
        self.data = Path(data)
        full = {
            **os.environ,
            "PYTHONPATH": str(root),
            "COLLECTOR_FORWARD_HOST": "127.0.0.1",
            "COLLECTOR_FORWARD_PORT": str(self.port),
            "COLLECTOR_HTTP_HOST": "127.0.0.1",
            "COLLECTOR_HTTP_PORT": str(self.http),
            "COLLECTOR_DATA_DIR": data,
            "LOG_LEVEL": "error",
            **env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "patterns.sidecar.collector"], env=full, cwd=root
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"collector exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)

    def status(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def disk(self) -> int:
        return sum(p.stat().st_size for p in self.data.iterdir() if p.is_file())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def entry(record: dict) -> bytes:
    return msgpack.packb([EventTime(time.time()), record], use_bin_type=True)


def send_and_wait(port: int, request: bytes, timeout: float = 120) -> str:
    """Send one request; 'acked', 'closed' or 'timeout'."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(request)
        unpacker = msgpack.Unpacker(raw=False)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return "closed"
                unpacker.feed(data)
                for _ in unpacker:
                    return "acked"
        except TimeoutError:
            return "timeout"
        except OSError:
            return "closed"


def concurrently(count: int, work: Callable[[int], str]) -> list[str]:
    results: list[str] = [""] * count

    def run(i: int) -> None:
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def partial_frames(c: Collector) -> str:
    body = 16 * MIB - 1024
    request = protocol.encode_packed_forward("flood", b"\x00" * body, 1, "c")
    socks = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", c.port), timeout=30)
        with contextlib.suppress(OSError):
            sock.sendall(request[:-1])
        socks.append(sock)
    time.sleep(3)
    peak = c.status("VmHWM")
    open_now = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            open_now += sock.recv(1) != b""
        except BlockingIOError:
            open_now += 1
        except OSError:
            pass
        sock.close()
    return f"peak RSS {peak / MIB:.0f} MiB; {open_now} of 20 connections still open"


def partial_objects(c: Collector) -> str:
    body = 2 * MIB
    head = b"\x93\xa1t\xdd" + (body).to_bytes(4, "big")  # ["t", [<2 MiB of {}> ...
    socks = []
    for _ in range(4):
        sock = socket.create_connection(("127.0.0.1", c.port), timeout=30)
        with contextlib.suppress(OSError):
            sock.sendall(head + b"\x80" * (body - 16))
        socks.append(sock)
    time.sleep(3)
    peak = c.status("VmHWM")
    for sock in socks:
        sock.close()
    return f"peak RSS {peak / MIB:.0f} MiB"


def gzip_flood(c: Collector, record: dict, count: int) -> str:
    stream = entry(record) * count
    packed = gzip.compress(stream, 9)
    requests = [
        msgpack.packb(
            ["t", packed, {"size": count, "chunk": f"c{i}", "compressed": "gzip"}],
            use_bin_type=True,
        )
        for i in range(8)
    ]
    results = concurrently(8, lambda i: send_and_wait(c.port, requests[i]))
    peak = c.status("VmHWM")
    return (
        f"8 x {len(requests[0]) / 1024:.0f} KiB sent ({len(stream) / MIB:.1f} MiB decompressed "
        f"each): {results.count('acked')} acked, {results.count('closed')} refused; "
        f"peak RSS {peak / MIB:.0f} MiB"
    )


def gzip_objects(c: Collector) -> str:
    # 100,000 records of nested empty maps: ~6 bytes of msgpack per map.
    return gzip_flood(c, {"m": [{}] * 100}, 100_000 // 8)


def gzip_strings(c: Collector) -> str:
    return gzip_flood(c, {"log": "x" * 600}, 100_000)


def disk(c: Collector, seconds: float, record: dict) -> str:
    one = entry(record)
    frame_limit = 2 * MIB
    count = (frame_limit - 4096) // len(one)
    packed = gzip.compress(one * count, 9)
    request_base = ["t", packed, {"size": count, "compressed": "gzip"}]
    sent = 0
    requests = 0
    peak_disk = 0
    client_sock = socket.create_connection(("127.0.0.1", c.port), timeout=30)
    unpacker = msgpack.Unpacker(raw=False)
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    refused = 0
    while time.monotonic() < deadline:
        request = msgpack.packb(
            [*request_base[:2], {**request_base[2], "chunk": f"d{requests}"}], use_bin_type=True
        )
        try:
            client_sock.sendall(request)
            while True:
                data = client_sock.recv(4096)
                if not data:
                    raise ConnectionResetError
                unpacker.feed(data)
                if any(True for _ in unpacker):
                    break
        except OSError:
            refused += 1
            client_sock.close()
            client_sock = socket.create_connection(("127.0.0.1", c.port), timeout=30)
            unpacker = msgpack.Unpacker(raw=False)
            continue
        sent += len(request)
        requests += 1
        if requests % 10 == 0:
            peak_disk = max(peak_disk, c.disk())
    elapsed = time.monotonic() - started
    client_sock.close()
    peak_disk = max(peak_disk, c.disk())
    return (
        f"{requests} requests acked ({sent / 1024:.0f} KiB sent) in {elapsed:.1f}s, "
        f"{refused} refused; on disk {c.disk() / MIB:.0f} MiB at the end, "
        f"{peak_disk / MIB:.0f} MiB at most; peak RSS {c.status('VmHWM') / MIB:.0f} MiB"
    )


def lockout(c: Collector, wait: float) -> str:
    idle = []
    for _ in range(300):
        try:
            idle.append(socket.create_connection(("127.0.0.1", c.port), timeout=5))
        except OSError:
            break
    stop = threading.Event()
    trickle: list[socket.socket] = []

    def trickler() -> None:
        frame = protocol.encode_packed_forward("trickle", entry({"log": "x"}) * 100, 100, "t")
        for _ in range(20):
            with contextlib.suppress(OSError):
                trickle.append(socket.create_connection(("127.0.0.1", c.port), timeout=5))
        position = 0
        while not stop.is_set() and position < len(frame):
            for sock in trickle:
                with contextlib.suppress(OSError):
                    sock.send(frame[position : position + 1])
            position += 1
            stop.wait(1.0)

    thread = threading.Thread(target=trickler)
    thread.start()
    time.sleep(2)
    started = time.monotonic()
    attempts = 0
    result = f"not acked within {wait:.0f}s"
    client = ForwardClient("127.0.0.1", c.port, connect_timeout=2, ack_timeout=5)
    while time.monotonic() - started < wait:
        attempts += 1
        try:
            client.send_packed("good", entry({"log": "good"}), 1)
        except ForwardError:
            time.sleep(0.2)
            continue
        result = f"acked after {time.monotonic() - started:.2f}s"
        break
    client.close()
    stop.set()
    thread.join()
    for sock in idle + trickle:
        sock.close()
    return (
        f"{len(idle)} idle + {len(trickle)} trickling sockets: good client {result} "
        f"({attempts} attempts)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="tree to run the collector from")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--seconds", type=float, default=3.0, help="disk flood duration")
    parser.add_argument("--lockout-wait", type=float, default=30.0)
    args = parser.parse_args()
    manifest = manifest_env()
    scenarios: dict[str, tuple[dict[str, str], Callable[[Collector], str]]] = {
        "partial-frames": ({"COLLECTOR_MAX_FRAME_BYTES": str(16 * MIB)}, partial_frames),
        "partial-objects": ({"COLLECTOR_MAX_FRAME_BYTES": str(4 * MIB)}, partial_objects),
        "gzip-objects": ({}, gzip_objects),
        "gzip-strings": ({}, gzip_strings),
        "disk": (manifest, lambda c: disk(c, args.seconds, {"log": "\x00" * 4000})),
        "disk-mixed": (
            manifest,
            lambda c: disk(c, args.seconds, {"log": "\x00" * 1000 + "x" * 3000}),
        ),
        "lockout": (manifest, lambda c: lockout(c, args.lockout_wait)),
    }
    print(f"collector from {args.root}")
    for name, (env, run) in scenarios.items():
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory() as data:
            collector = Collector(args.root, data, {"COLLECTOR_FSYNC": "false", **env})
            try:
                print(f"{name:16s} {run(collector)}", flush=True)
            finally:
                collector.stop()


if __name__ == "__main__":
    main()
