#!/usr/bin/env python3
"""log-adapter vs mtail on the same combined access log, in the same run.

Generates a combined log (with %D, some malformed lines, "-" request lines and a method
outside the known set) whose tallies are known, runs mtail (Debian's package) in one-shot
mode with an equivalent program (benchmarks/adapter_combined.mtail), then the real
log-adapter process (ADAPTER_OUTPUT=none, metrics only, like mtail): started and ready
first, then the log is renamed into its glob and timed until the adapter has counted
every line. Checks that both report the same counts as the generator, and prints each
one's start-up and processing time, two ratios and the adapter's peak RSS. Runs alternate
and the best of each figure is kept: the machine is shared.

Start-up is timed apart on both sides, so the ratios compare like with like: the
adapter's is launch to /readyz (Python, ~0.2 s); mtail's is a one-shot run of the same
program on an empty log (a few ms), subtracted from its runs to give its processing time.
"processing only" is the throughput ratio; "start-up included" divides whole runs.

Where the mtail program differs from the adapter (mtail 3.0.0~rc50 cannot do better; the
generated log has none of these cases, so the counts must be identical):
  - the adapter rejects a line whose time is not a real one (31/Feb, 25:00); mtail has
    no such check (its strptime would abort the line, counted neither way);
  - the adapter folds every id-like path segment (/a/1/b/2 -> /a/:id/b/:id); mtail's
    subst replaces literally and allows one regex per scope, so only the last segment;
  - the adapter labels at most ADAPTER_MAX_PATHS paths (later ones _other); mtail
    labels every path it sees;
  - the adapter reads the file through the suite's follower, which replaces invalid
    UTF-8 and splits lines longer than ADAPTER_MAX_LINE_BYTES; mtail reads it its way;
  - the histogram's _sum is integer microseconds in the adapter, a float sum in mtail
    (compared: buckets and _count, not _sum).

The adapter's CPU seconds per line (start-up excluded) are printed too: unlike wall time
they hardly move when other work shares the cores. `--root DIR` runs the adapter from
another tree (e.g. a `git worktree` of an older commit) to compare the two.

    .venv/bin/python benchmarks/adapter_vs_mtail.py [--lines 500000] [--repeat 3] [--root DIR]
"""


from __future__ import annotations

import argparse
import os
import shutil
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

from measure import cpu_seconds, free_port  # noqa: E402

from tests import loggen  # noqa: E402

PROGRAM = Path(__file__).with_name("adapter_combined.mtail")


def tallies(exposition: str) -> dict[str, Counter]:
    """The series both tools export, keyed without the prog/input labels."""
    found: dict[str, Counter] = {
        "requests": Counter(),
        "bytes": Counter(),
        "paths": Counter(),
        "buckets": Counter(),
        "lines": Counter(),
    }
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if s.name == "http_requests_total":
                found["requests"][(s.labels["method"], s.labels["status"])] += int(s.value)
            elif s.name == "http_response_size_bytes_total":
                found["bytes"][(s.labels["method"], s.labels["status"])] += int(s.value)
            elif s.name == "http_requests_by_path_total":
                found["paths"][(s.labels["path"], s.labels["status_class"])] += int(s.value)
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
        "paths": Counter(expected.by_path),
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


def run_adapter(
    log: Path, lines: int, work: Path, root: Path = ROOT
) -> tuple[float, float, str, int, float]:
    """Start the adapter (from `root`) on an empty directory, wait until it is ready, then
    move the log in (one rename, as a rotation would) and time it until /status has counted
    every line. Returns (start-up seconds, processing seconds, exposition, peak RSS in KiB,
    CPU seconds spent processing)."""
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
        env={**env, "PYTHONPATH": str(root)},
        cwd=root,
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
        cpu_before = cpu_seconds(proc.pid)
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
                cpu = cpu_seconds(proc.pid) - cpu_before
                break
        status = Path(f"/proc/{proc.pid}/status").read_text()
        peak_kib = int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1])
        exposition = get("/metrics")
        assert exposition is not None
        return startup, elapsed, exposition.text, peak_kib, cpu
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is kept")
    parser.add_argument("--root", type=Path, default=ROOT, help="tree to run the adapter from")
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

        empty = work / "empty.log"
        empty.write_text("")
        # Seconds per run (mtail: whole one-shot runs, and runs on the empty log); KiB.
        mtail_times: list[float] = []
        mtail_startups: list[float] = []
        adapter_times: list[float] = []
        startups: list[float] = []
        totals: list[float] = []
        peaks: list[int] = []
        cpus: list[float] = []
        for _ in range(args.repeat):
            mtail_startups.append(run_mtail(mtail, empty)[0])
            seconds, text = run_mtail(mtail, log)
            if tallies(text) != want:
                print("MISMATCH: mtail's counts differ from the input's", file=sys.stderr)
                return 1
            mtail_times.append(seconds)
            startup, seconds, text, peak, cpu = run_adapter(log, args.lines, work, args.root)
            if tallies(text) != want:
                print("MISMATCH: log-adapter's counts differ from the input's", file=sys.stderr)
                return 1
            adapter_times.append(seconds)
            startups.append(startup)
            totals.append(startup + seconds)
            peaks.append(peak)
            cpus.append(cpu)

        mtail_startup = min(mtail_startups)
        mtail_processing = min(mtail_times) - mtail_startup
        mtail_rate = args.lines / mtail_processing
        adapter_rate = args.lines / min(adapter_times)
        print("counts: identical (requests, bytes, by path, duration buckets, parsed/rejected)")
        print(f"best of {args.repeat}       start-up  processing  lines/s (processing)")
        for name, startup, processing in (
            ("mtail", mtail_startup, mtail_processing),
            ("log-adapter", min(startups), min(adapter_times)),
        ):
            rate = args.lines / processing
            print(f"{name:<14} {startup:>7.2f} s  {processing:>8.2f} s  {rate:>11,.0f}")
        ratio = adapter_rate / mtail_rate
        print(f"ratio, processing only     {ratio:>5.2f} x mtail  (target >= 2)")
        print(f"ratio, start-up included   {min(mtail_times) / min(totals):>5.2f} x mtail")
        print(f"peak RSS, log-adapter     {max(peaks) / 1024:>5.1f} MiB  (target < 64)")
        print(
            f"CPU per line, log-adapter {min(cpus) / args.lines * 1e6:>5.2f} us"
            f"  (runs: {', '.join(f'{c / args.lines * 1e6:.2f}' for c in cpus)}; from {args.root})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
