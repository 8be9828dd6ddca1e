"""log-adapter as a real process against hostile input: every decoder fed values that do
not fit the model (tests.loggen.hostile_lines). Each such line costs that line,
counted; the adapter keeps running, parses the lines after it, /metrics still answers and
passes promtool, a restart does not replay the poison, and the Forward output delivers it
all to a collector with the manifest's small frames."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import requests

from tests import loggen
from tests.conftest import free_port, http_ok, require_tool, wait_until
from tests.process.test_adapter import Adapter, append, peak_rss_mib, start_collector

GOOD = 5
FORMATS = ("combined", "legacy", "json", "regex")
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def write_battery(path: Path, fmt: str, good: range) -> tuple[int, int]:
    """The format's battery then good lines; returns the (parsed, rejected) it must give."""
    hostile = loggen.hostile_lines()[fmt]
    lines = [h.line for h in hostile] + [loggen.good_after(fmt, n) for n in good]
    append(path, ("\n".join(lines) + "\n").encode())
    rejected = sum(h.result == "rejected" for h in hostile)
    return len(lines) - rejected, rejected


def settled(adapter: Adapter, expected: dict[str, tuple[int, int]]) -> bool:
    """Every input counted as expected, and everything handled and committed."""
    try:
        status = requests.get(f"http://127.0.0.1:{adapter.port}/status", timeout=5).json()
    except requests.RequestException:
        return False
    counted = {i["glob"]: (i["parsed"], i["rejected"]) for i in status["inputs"]}
    return (counted == expected and status["backlog_bytes"] == 0
            and not status["lines_held"])


def test_a_hostile_battery_costs_its_lines_and_a_restart_does_not_replay_it(service, tmp_path):
    promtool = require_tool("promtool", "apt-get install prometheus")
    logs = tmp_path / "log"
    logs.mkdir()
    paths = {fmt: logs / f"{fmt}.log" for fmt in FORMATS}
    adapter = Adapter(
        service, tmp_path, ",".join(f"{fmt}={path}" for fmt, path in paths.items()),
        ADAPTER_REGEX=loggen.HOSTILE_REGEX, ADAPTER_MULTILINE_FLUSH_SECONDS="0.2",
    ).start()
    expected = {str(path): write_battery(path, fmt, range(GOOD)) for fmt, path in paths.items()}
    wait_until(lambda: settled(adapter, expected), timeout=30, what="every line counted")
    assert adapter.proc.alive()

    response = requests.get(f"http://127.0.0.1:{adapter.port}/metrics", timeout=5)
    assert response.status_code == 200
    text = response.content.decode("utf-8")  # strict: a lone surrogate would fail here
    assert not RAW_CONTROL.search(text), "control characters are escaped, not raw"
    paths_seen = {dict(labels)["path"] for name, labels in adapter.samples()
                  if name == "http_requests_by_path_total"}
    assert {"/c%1B[31m%07%00%7F%C2%85", "/\ufffd", "/after", "_other"} <= paths_seen
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == "", "no lint findings"

    first = adapter.records()
    for fmt in FORMATS:
        bodies = "\n".join(str(r["body"]) for r in first
                           if r["attributes"]["log.file.path"] == str(paths[fmt]))
        assert all(f"n={n}" in bodies for n in range(GOOD)), f"{fmt}: the lines after parsed"

    # A pod restart: the checkpoints are past the poison (everything was committed), so
    # the next process reads only what comes after it.
    adapter.proc.signal(signal.SIGKILL)
    adapter.proc.wait()
    adapter.start()
    for fmt, path in paths.items():
        append(path, "".join(loggen.good_after(fmt, n) + "\n"
                             for n in range(GOOD, GOOD + 3)).encode())
    again = {str(path): (3, 0) for path in paths.values()}
    wait_until(lambda: settled(adapter, again), timeout=30, what="only the new lines")
    replayed = [r for r in adapter.records()[len(first):]
                if not re.search(r"n=[5-7]\b", str(r["body"]))]
    assert replayed == [], "nothing before the restart is read again"
    assert adapter.proc.stop() == 0


def test_hostile_lines_and_a_flood_of_empty_lines_reach_a_collector_with_small_frames(
    service, tmp_path
):
    """The Forward output to a collector with its manifest's 2 MiB frames: records whose
    strings, numbers or times msgpack and EventTime cannot carry as they are, and 256 KiB of
    empty lines (a quarter of a million records from one read), all delivered and stored,
    in requests the collector takes, with the adapter's memory bounded."""
    forward_port, http_port = free_port(), free_port()
    start_collector(service, tmp_path, forward_port, http_port,
                    COLLECTOR_MAX_FRAME_BYTES=str(2 * 2**20))
    wait_until(lambda: http_ok(f"http://127.0.0.1:{http_port}/readyz"), what="collector")
    logs = tmp_path / "log"
    logs.mkdir()
    access, events = logs / "access.log", logs / "events.log"
    empty = 256 * 1024
    append(access, b"\n" * empty)
    lines = empty
    for path, fmt in ((access, "combined"), (events, "json")):
        parsed, rejected = write_battery(path, fmt, range(GOOD))
        lines += parsed + rejected
    adapter = Adapter(
        service, tmp_path, f"combined={access},json={events}", ADAPTER_OUTPUT="forward",
        FLUENT_HOST="127.0.0.1", FLUENT_PORT=str(forward_port),
    ).start()

    def total() -> int:
        try:
            return int(requests.get(f"http://127.0.0.1:{http_port}/api/counts",
                                    timeout=2).json()["total"])
        except requests.RequestException:
            return -1

    wait_until(lambda: total() == lines, timeout=90, what="every line at the collector")
    assert adapter.proc.alive()
    assert peak_rss_mib(adapter.proc.pid) < 64
    assert adapter.samples()[("adapter_backlog_bytes", ())] == 0
