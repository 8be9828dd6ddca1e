"""log-shipper throughput: lines/s from a file to the log-collector with acks on, against
the loopback limit measured in the same run (the same bytes sent raw over a TCP socket on
127.0.0.1), plus the shipper's peak RSS. Prints figures and ratios; not a pass/fail test.

    .venv/bin/python benchmarks/shipper_throughput.py [--lines 500000] [--line-bytes 120]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from measure import cpu_seconds, free_port, peak_rss_kib

ROOT = Path(__file__).resolve().parent.parent
TARGET_LINES_PER_S = 200_000
TARGET_RSS = 64 * 1024 * 1024


def write_log(path: Path, lines: int, line_bytes: int) -> int:
    padding = "x" * (line_bytes - 11)
    with open(path, "wb") as handle:
        for start in range(0, lines, 10_000):
            end = min(start + 10_000, lines)
            handle.write("".join(f"{i:09d} {padding}\n" for i in range(start, end)).encode())
    return path.stat().st_size


def loopback_seconds(path: Path) -> float:
    """Time to push the file's bytes through a loopback TCP connection and read them."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    received = 0

    def receive() -> None:
        nonlocal received
        conn, _ = server.accept()
        buffer = bytearray(1024 * 1024)
        with conn:
            while n := conn.recv_into(buffer):
                received += n

    thread = threading.Thread(target=receive)
    thread.start()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock, open(path, "rb") as handle:
        while block := handle.read(1024 * 1024):
            sock.sendall(block)
    thread.join()
    elapsed = time.perf_counter() - started
    server.close()
    assert received == path.stat().st_size
    return elapsed


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.loads(response.read())


def wait_ready(url: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"not ready: {url}")


def start(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", module],
        env={**os.environ, **env},
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--line-bytes", type=int, default=120)
    parser.add_argument("--collector-fsync", default="true", choices=("true", "false"))
    parser.add_argument("--checkpoint-fsync", default="true", choices=("true", "false"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="shipper-bench-") as tmp:
        work = Path(tmp)
        (work / "logs").mkdir()
        log_file = work / "logs" / "app.log"
        size = write_log(log_file, args.lines, args.line_bytes)
        loopback = loopback_seconds(log_file)

        forward_port, collector_http, shipper_http = free_port(), free_port(), free_port()
        collector = start(
            "patterns.sidecar.collector",
            {
                "COLLECTOR_FORWARD_HOST": "127.0.0.1",
                "COLLECTOR_FORWARD_PORT": str(forward_port),
                "COLLECTOR_HTTP_HOST": "127.0.0.1",
                "COLLECTOR_HTTP_PORT": str(collector_http),
                "COLLECTOR_DATA_DIR": str(work / "collector"),
                "COLLECTOR_FSYNC": args.collector_fsync,
            },
            work / "collector.log",
        )
        shipper = None
        try:
            wait_ready(f"http://127.0.0.1:{collector_http}/readyz")
            collector_cpu_before = cpu_seconds(collector.pid)
            started = time.perf_counter()
            shipper = start(
                "patterns.sidecar.shipper",
                {
                    "SHIPPER_PATHS": str(log_file),
                    "SHIPPER_STATE_DIR": str(work / "state"),
                    "SHIPPER_HTTP_HOST": "127.0.0.1",
                    "SHIPPER_HTTP_PORT": str(shipper_http),
                    "FLUENT_PORT": str(forward_port),
                    "SHIPPER_CHECKPOINT_FSYNC": args.checkpoint_fsync,
                },
                work / "shipper.log",
            )
            counts_url = f"http://127.0.0.1:{collector_http}/api/counts"
            deadline = time.monotonic() + 600
            while True:
                try:
                    if get_json(counts_url)["total"] >= args.lines:
                        break
                except OSError:
                    pass
                if shipper.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"shipper stopped or timed out; see {work}/shipper.log")
                time.sleep(0.02)
            elapsed = time.perf_counter() - started
            shipper_cpu = cpu_seconds(shipper.pid)
            collector_cpu = cpu_seconds(collector.pid) - collector_cpu_before
            rss = peak_rss_kib(shipper.pid) * 1024
        finally:
            for proc in (shipper, collector):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(30)

    shipped = args.lines / elapsed
    raw = args.lines / loopback
    mib = 1024 * 1024
    print(
        f"lines: {args.lines} x {args.line_bytes} B ({size / mib:.1f} MiB),"
        f" shipper and collector on {os.cpu_count()} cores"
    )
    print(f"collector fsync: {args.collector_fsync}, checkpoint fsync: {args.checkpoint_fsync}")
    print(
        f"loopback limit (raw TCP):     {raw:12,.0f} lines/s  ({size / loopback / mib:,.0f} MiB/s)"
    )
    print(
        f"shipper -> collector, acked:  {shipped:12,.0f} lines/s"
        f"  ({size / elapsed / mib:,.1f} MiB/s)"
    )
    print(f"  ratio to loopback limit:    {shipped / raw:12.3f}")
    print(f"  ratio to target {TARGET_LINES_PER_S:,}/s:  {shipped / TARGET_LINES_PER_S:12.2f}")
    print(f"  (includes shipper start-up; wall {elapsed:.2f} s)")
    print(f"CPU seconds: shipper {shipper_cpu:.2f}, collector {collector_cpu:.2f}")
    # CPU time stays meaningful when other work shares the cores and the wall time does not.
    print(f"  shipper: {args.lines / shipper_cpu:,.0f} lines per CPU second (incl. start-up)")
    print(
        f"shipper peak RSS: {rss / mib:.1f} MiB  (ratio to 64 MiB target: {rss / TARGET_RSS:.2f})"
    )


if __name__ == "__main__":
    main()
