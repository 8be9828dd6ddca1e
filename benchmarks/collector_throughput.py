#!/usr/bin/env python3
"""log-collector throughput with acks, against a null Forward sink in the same run.

The load is what the log-shipper sends: PackedForward requests of N lines (~120 bytes,
[EventTime, {"log", "file"}] entries), each waiting for its ack, from one or more
ForwardClient processes. Three receivers get the same load, one after the other:

- `collector fsync`: the real log-collector process, default settings (fsync before ack);
- `collector no-fsync`: the same with COLLECTOR_FSYNC=false;
- `null sink`: the same ForwardServer (decoding, validation, acks) whose handler stores
  nothing, in a process tuned as the collector's (keep_request_buffers): the ceiling the
  collector's storage is measured against.

Prints lines/s for each, the collector's ratio to the null sink, and its peak RSS. Each
receiver gets `--repeat` runs and the best is kept: the machine is shared.

    .venv/bin/python benchmarks/collector_throughput.py [--seconds 5] [--batch 2000]
        [--senders 1] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import requests
from fluent.sender import EventTime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from measure import free_port, peak_rss_kib, wait_port  # noqa: E402

from patterns.common.forward.client import ForwardClient  # noqa: E402
from patterns.common.forward.server import ForwardServer, keep_request_buffers  # noqa: E402


def batch(lines: int) -> bytes:
    now = time.time()
    line = (
        '10.1.2.3 - - [25/Nov/2026:13:00:00 +0000] "GET /api/items?page={:06d} HTTP/1.1" 200 5120'
    )
    return b"".join(
        msgpack.packb(
            [EventTime(now), {"log": line.format(i), "file": "/var/log/app/access.log"}],
            use_bin_type=True,
        )
        for i in range(lines)
    )


def sender(port: int, lines: int, seconds: float, results: multiprocessing.Queue) -> None:
    entries = batch(lines)
    client = ForwardClient("127.0.0.1", port, ack_timeout=30)
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        client.send_packed("bench.access", entries, lines)
        sent += lines
    client.close()
    results.put(sent)


def drive(port: int, args: argparse.Namespace) -> float:
    results: multiprocessing.Queue = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=sender, args=(port, args.batch, args.seconds, results))
        for _ in range(args.senders)
    ]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    total = sum(results.get(timeout=args.seconds + 60) for _ in procs)
    for proc in procs:
        proc.join()
    return total / (time.monotonic() - started)


def run_collector(args: argparse.Namespace, fsync: bool) -> tuple[float, int]:
    port, http = free_port(), free_port()
    with tempfile.TemporaryDirectory() as data:
        env = {
            **os.environ,
            "COLLECTOR_FORWARD_HOST": "127.0.0.1",
            "COLLECTOR_FORWARD_PORT": str(port),
            "COLLECTOR_HTTP_HOST": "127.0.0.1",
            "COLLECTOR_HTTP_PORT": str(http),
            "COLLECTOR_DATA_DIR": data,
            "COLLECTOR_FSYNC": "true" if fsync else "false",
            "LOG_LEVEL": "warning",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "patterns.sidecar.collector"], env=env, cwd=ROOT
        )
        try:
            wait_port(port, proc=proc)
            rate = drive(port, args)
            counted = requests.get(f"http://127.0.0.1:{http}/api/counts", timeout=5).json()
            assert counted["total"] > 0
            rss = peak_rss_kib(proc.pid) * 1024
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    return rate, rss


def run_null_sink(args: argparse.Namespace) -> tuple[float, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--null-sink", str(port)], cwd=ROOT)
    try:
        wait_port(port, proc=proc)
        rate = drive(port, args)
        rss = peak_rss_kib(proc.pid) * 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return rate, rss


def null_sink(port: int) -> None:
    async def discard(_tag: str, _events: list) -> None:
        return None

    async def main() -> None:
        keep_request_buffers()  # as the collector does
        server = ForwardServer("127.0.0.1", port, discard)
        await server.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=2000, help="lines per request")
    parser.add_argument("--senders", type=int, default=1, help="concurrent client processes")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--null-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.null_sink:
        null_sink(args.null_sink)
        return
    line_bytes = len(batch(100)) / 100
    print(
        f"load: {args.senders} sender(s), {args.batch} lines/request "
        f"(~{line_bytes:.0f} bytes/entry), {args.seconds:.0f}s per run, best of {args.repeat}"
    )
    best: dict[str, tuple[float, int]] = {}
    for _ in range(args.repeat):  # alternate, so a noisy moment hits all alike
        for name, runner in (
            ("null sink", lambda: run_null_sink(args)),
            ("collector fsync", lambda: run_collector(args, True)),
            ("collector no-fsync", lambda: run_collector(args, False)),
        ):
            rate, rss = runner()
            if rate > best.get(name, (0.0, 0))[0]:
                best[name] = (rate, rss)
    ceiling = best["null sink"][0]
    for name, (rate, rss) in best.items():
        print(
            f"{name:20s} {rate:10,.0f} lines/s   {rate / ceiling:5.2f} x null sink"
            f"   peak RSS {rss / 2**20:5.0f} MiB"
        )


if __name__ == "__main__":
    main()
