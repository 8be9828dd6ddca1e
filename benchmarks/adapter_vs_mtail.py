#!/usr/bin/env python3
"""log-adapter vs mtail on the same combined access log, in the same run.

Generates a combined log (with %D and some malformed lines) whose tallies are known,
runs mtail (Debian's package) in one-shot mode with an equivalent program
(benchmarks/adapter_combined.mtail), then the real log-adapter process (ADAPTER_OUTPUT=none,
metrics only, like mtail): started and ready first, then the log is renamed into its
glob and timed until the adapter has counted every line (Python's ~0.3 s start-up is
printed apart; mtail's, a few ms for a Go binary, is inside its time). Checks that both
report the same counts as the generator, and prints lines/s for each, their ratio and the
adapter's peak RSS. Runs alternate and the best of each is kept: the machine is shared.

    .venv/bin/python benchmarks/adapter_vs_mtail.py [--lines 500000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from patterns.adapter import loggen  # noqa: E402

PROGRAM = Path(__file__).with_name("adapter_combined.mtail")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tallies(exposition: str) -> dict[str, Counter]:
    """The series both tools export, keyed without the prog/input labels."""
    found: dict[str, Counter] = {
        "requests": Counter(),
        "bytes": Counter(),
        "buckets": Counter(),
        "lines": Counter(),
    }
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if s.name == "http_requests_total":
                found["requests"][(s.labels["method"], s.labels["status"])] += int(s.value)
            elif s.name == "http_response_size_bytes_total":
                found["bytes"][(s.labels["method"], s.labels["status"])] += int(s.value)
            elif s.name == "http_request_duration_seconds_bucket":
                found["buckets"][float(s.labels["le"])] += int(s.value)
            elif s.name == "adapter_lines_total":
                found["lines"][s.labels["result"]] += int(s.value)
    return found


def expected_tallies(expected: loggen.Expected) -> dict[str, Counter]:
    from itertools import accumulate

    from patterns.adapter.log_adapter.metrics import DURATION_BUCKETS

    cumulative = accumulate(expected.duration_buckets)
    return {
        "requests": Counter(expected.requests),
        "bytes": Counter({k: v for k, v in expected.response_bytes.items()}),
        "buckets": Counter(dict(zip((*DURATION_BUCKETS, float("inf")), cumulative, strict=True))),
        "lines": Counter({"parsed": expected.parsed, "rejected": expected.rejected}),
    }


def run_mtail(mtail: str, log: Path) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(
        [
            mtail,
            "--one_shot",
            "--one_shot_format",
            "prometheus",
            "--emit_prog_label=false",
            "--progs",
            str(PROGRAM),
            "--logs",
            str(log),
            "--logtostderr",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return time.perf_counter() - started, result.stdout


def run_adapter(log: Path, lines: int, work: Path) -> tuple[float, float, str, int]:
    """Start the adapter on an empty directory, wait until it is ready, then move the log
    in (one rename, as a rotation would) and time it until /status has counted every line.
    Returns (start-up seconds, processing seconds, exposition, peak RSS in KiB)."""
    port = free_port()
    state = Path(tempfile.mkdtemp(dir=work))
    inbox = Path(tempfile.mkdtemp(dir=work))
    target = inbox / "access.log"
    env = {
        **os.environ,
        "ADAPTER_INPUTS": f"combined={target}",
        "ADAPTER_STATE_DIR": str(state),
        "ADAPTER_HTTP_HOST": "127.0.0.1",
        "ADAPTER_HTTP_PORT": str(port),
        "ADAPTER_OUTPUT": "none",
        "LOG_LEVEL": "warning",
    }
    base = f"http://127.0.0.1:{port}"
    launched = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "patterns.adapter.log_adapter"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600

        def get(path: str) -> requests.Response | None:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("log-adapter exited or timed out")
            try:
                return requests.get(base + path, timeout=5)
            except requests.RequestException:
                return None

        while (response := get("/readyz")) is None or response.status_code != 200:
            time.sleep(0.01)
        startup = time.perf_counter() - launched
        os.link(log, work / "staged.log")  # same file system: the rename below is atomic
        started = time.perf_counter()
        os.rename(work / "staged.log", target)
        while True:
            # Polling costs the adapter CPU (its admin thread shares the GIL); every 25 ms
            # is <= 1.5% of a run's time in overshoot.
            time.sleep(0.025)
            response = get("/status")
            if response is None:
                continue
            counted = sum(i["parsed"] + i["rejected"] for i in response.json()["inputs"])
            if counted >= lines:
                elapsed = time.perf_counter() - started
                break
        status = Path(f"/proc/{proc.pid}/status").read_text()
        peak_kib = int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1])
        exposition = get("/metrics")
        assert exposition is not None
        return startup, elapsed, exposition.text, peak_kib
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is kept")
    args = parser.parse_args()
    mtail = shutil.which("mtail")
    if mtail is None:
        print("needs mtail: apt-get install mtail", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="adapter-bench-") as tmp:
        work = Path(tmp)
        log = work / "access.log"
        lines, expected = loggen.combined_lines(args.lines, seed=42, malformed_every=1000)
        log.write_text("\n".join(lines) + "\n")
        size_mib = log.stat().st_size / 2**20
        want = expected_tallies(expected)
        print(f"input: {args.lines} lines ({size_mib:.1f} MiB), {expected.rejected} malformed")

        mtail_times, adapter_times, startups, peaks = [], [], [], []
        for _ in range(args.repeat):
            seconds, text = run_mtail(mtail, log)
            if tallies(text) != want:
                print("MISMATCH: mtail's counts differ from the input's", file=sys.stderr)
                return 1
            mtail_times.append(seconds)
            startup, seconds, text, peak = run_adapter(log, args.lines, work)
            if tallies(text) != want:
                print("MISMATCH: log-adapter's counts differ from the input's", file=sys.stderr)
                return 1
            adapter_times.append(seconds)
            startups.append(startup)
            peaks.append(peak)

        mtail_rate = args.lines / min(mtail_times)
        adapter_rate = args.lines / min(adapter_times)
        print("counts: identical (requests, bytes, duration buckets, parsed/rejected lines)")
        best = f"best of {args.repeat}"
        print(f"mtail        {mtail_rate:>10,.0f} lines/s  ({best}: {min(mtail_times):.2f} s)")
        print(f"log-adapter  {adapter_rate:>10,.0f} lines/s  ({best}: {min(adapter_times):.2f} s)")
        print(f"             (+ {min(startups):.2f} s start-up before the file arrived)")
        print(f"ratio        {adapter_rate / mtail_rate:>10.2f} x mtail  (target >= 2)")
        print(f"peak RSS     {max(peaks) / 1024:>10.1f} MiB  (target < 64)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
