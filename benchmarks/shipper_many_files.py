"""log-shipper with many files: lines/s and peak RSS when the same lines are spread over
1, 100 and 1,000 pre-written files, shipped to the log-collector with acks on, and the
ratio of each case to the 1-file case in the same run. A follower whose cost per line does
not depend on how many files it follows keeps these ratios near 1 (a batch carries the
lines of many files, so each file costs its reads, not an ack or a checkpoint save of its
own).

Optionally the same files are read by Fluent Bit's `tail` input into the same collector
(`forward` output with `Require_ack_response true`) and the shipper's ratio to it is
printed. Fluent Bit was not available where this benchmark was written (it is neither in
Debian bookworm nor on PyPI), so that peer is only run when `--fluent-bit PATH` is given.

    .venv/bin/python benchmarks/shipper_many_files.py [--lines 1000000] [--files 1,100,1000]
        [--line-bytes 120] [--fluent-bit /usr/bin/fluent-bit] [--src DIR]

`--src DIR` runs the shipper from another checkout (e.g. `git worktree add /tmp/old
<commit>`), to compare code before and after a change in one run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import cpu_seconds, free_port, peak_rss_kib
from shipper_throughput import ROOT, get_json, wait_ready

MIB = 1024 * 1024


def write_files(directory: Path, files: int, lines: int, line_bytes: int) -> None:
    """`lines` lines in all, spread evenly over `files` files named f00000.log..."""
    directory.mkdir(parents=True)
    padding = "x" * (line_bytes - 17)
    per_file = lines // files
    for index in range(files):
        body = "".join(f"{index:05d} {n:09d} {padding}\n" for n in range(per_file))
        (directory / f"f{index:05d}.log").write_bytes(body.encode())


def start(command: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command, env={**os.environ, **env}, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
        cwd=cwd,
    )


def start_collector(work: Path, fsync: str) -> tuple[subprocess.Popen, int, int]:
    forward_port, http_port = free_port(), free_port()
    proc = start(
        [sys.executable, "-m", "patterns.sidecar.collector"],
        {
            "COLLECTOR_FORWARD_HOST": "127.0.0.1",
            "COLLECTOR_FORWARD_PORT": str(forward_port),
            "COLLECTOR_HTTP_HOST": "127.0.0.1",
            "COLLECTOR_HTTP_PORT": str(http_port),
            "COLLECTOR_DATA_DIR": str(work / "collector"),
            "COLLECTOR_FSYNC": fsync,
        },
        work / "collector.log",
        ROOT,
    )
    wait_ready(f"http://127.0.0.1:{http_port}/readyz")
    return proc, forward_port, http_port


def shipper_command(src: Path, logs: Path, work: Path, forward_port: int, files: int):
    env = {
        "SHIPPER_PATHS": str(logs / "*.log"),
        "SHIPPER_STATE_DIR": str(work / "state"),
        "SHIPPER_HTTP_HOST": "127.0.0.1",
        "SHIPPER_HTTP_PORT": str(free_port()),
        "FLUENT_PORT": str(forward_port),
        "SHIPPER_MAX_FILES": str(max(256, files)),
        "PYTHONPATH": str(src),
    }
    return [sys.executable, "-m", "patterns.sidecar.shipper"], env, src


def fluent_bit_command(binary: str, logs: Path, work: Path, forward_port: int, files: int):
    config = work / "fluent-bit.conf"
    config.write_text(
        "[SERVICE]\n    Flush 0.2\n    Log_Level warn\n"
        "[INPUT]\n    Name tail\n"
        f"    Path {logs}/*.log\n    Read_from_Head true\n"
        f"    DB {work}/fluent-bit.db\n    Refresh_Interval 1\n"
        "    Buffer_Chunk_Size 512k\n    Buffer_Max_Size 1M\n"
        "[OUTPUT]\n    Name forward\n    Match *\n    Host 127.0.0.1\n"
        f"    Port {forward_port}\n    Require_ack_response true\n"
    )
    return [binary, "-c", str(config)], {}, work


def run_case(kind: str, args: argparse.Namespace, files: int) -> tuple[float, int, float]:
    """(lines/s, peak RSS bytes, CPU seconds) of one peer shipping `files` files."""
    with tempfile.TemporaryDirectory(prefix="shipper-many-") as tmp:
        work = Path(tmp)
        logs = work / "logs"
        write_files(logs, files, args.lines, args.line_bytes)
        total = (args.lines // files) * files
        collector, forward_port, http_port = start_collector(work, args.collector_fsync)
        peer = None
        try:
            if kind == "fluent-bit":
                command, env, cwd = fluent_bit_command(
                    args.fluent_bit, logs, work, forward_port, files
                )
            else:
                src = Path(args.src) if kind == "old" else ROOT
                command, env, cwd = shipper_command(src, logs, work, forward_port, files)
            started = time.perf_counter()
            peer = start(command, env, work / f"{kind}.log", cwd)
            counts_url = f"http://127.0.0.1:{http_port}/api/counts"
            deadline = time.monotonic() + args.timeout
            while True:
                try:
                    if get_json(counts_url)["total"] >= total:
                        break
                except OSError:
                    pass
                if peer.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{kind} stopped or timed out at {files} files")
                time.sleep(0.02)
            elapsed = time.perf_counter() - started
            rss = peak_rss_kib(peer.pid) * 1024
            cpu = cpu_seconds(peer.pid)
        finally:
            for proc in (peer, collector):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(30)
    return total / elapsed, rss, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines in all")
    parser.add_argument("--files", default="1,100,1000", help="file counts, comma-separated")
    parser.add_argument("--line-bytes", type=int, default=120)
    parser.add_argument("--collector-fsync", default="false", choices=("true", "false"))
    parser.add_argument("--fluent-bit", metavar="PATH", help="also run Fluent Bit's tail input")
    parser.add_argument("--src", metavar="DIR", help="also run the shipper of another checkout")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    counts = [int(n) for n in args.files.split(",")]
    peers = ["shipper"] + (["old"] if args.src else [])
    peers += ["fluent-bit"] if args.fluent_bit else []

    results: dict[tuple[str, int], tuple[float, int, float]] = {}
    for files in counts:
        for kind in peers:
            results[kind, files] = run_case(kind, args, files)

    print(
        f"{args.lines:,} lines x {args.line_bytes} B spread over {args.files} files,"
        f" acked by the log-collector, {os.cpu_count()} cores"
    )
    base = counts[0]
    for kind in peers:
        label = {"shipper": "shipper", "old": f"shipper ({args.src})", "fluent-bit": "fluent-bit"}
        print(f"{label[kind]}:")
        rate0, rss0, _ = results[kind, base]
        for files in counts:
            rate, rss, cpu = results[kind, files]
            print(
                f"  {files:6,} files: {rate:10,.0f} lines/s ({rate / rate0:5.2f}x {base} file),"
                f" peak RSS {rss / MIB:6.1f} MiB ({rss / rss0:4.2f}x),"
                f" {args.lines / cpu:10,.0f} lines per CPU second"
            )
    for other in peers[1:]:
        print(f"shipper / {other}:")
        for files in counts:
            ratio = results["shipper", files][0] / results[other, files][0]
            print(f"  {files:6,} files: {ratio:5.2f}x lines/s")


if __name__ == "__main__":
    main()
