"""log-adapter as a real process reading real files: rotation, restarts, garbage, a
traceback cut in half by a restart, the Forward output to the real collector, and the
exposition checked by promtool and scraped by a real Prometheus server."""

from __future__ import annotations

import calendar
import json
import os
import shutil
import signal
import subprocess
import threading
from collections import Counter
from itertools import accumulate
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from patterns.adapter.log_adapter.metrics import DURATION_BUCKETS
from tests import loggen
from tests.conftest import ROOT, free_port, http_ok, require_tool, wait_until

GOOD = (
    '10.0.0.{c} - - [25/Nov/2026:12:00:{s:02d} +0000] "GET /items?n={n} HTTP/1.1" {status} 42'
    ' "-" "curl/8.5.0" {d}\n'
)


def good_line(n: int) -> bytes:
    return GOOD.format(
        c=n % 250, s=n % 60, n=n, status=500 if n % 10 == 0 else 200, d=1000 + n
    ).encode()


class Adapter:
    """One log-adapter process; `records()` are the OTel records it printed."""

    def __init__(self, service, tmp_path: Path, inputs: str, **env: str) -> None:
        self.port = free_port()
        self.env = {
            "ADAPTER_INPUTS": inputs,
            "ADAPTER_STATE_DIR": str(tmp_path / "state"),
            "ADAPTER_HTTP_HOST": "127.0.0.1",
            "ADAPTER_HTTP_PORT": str(self.port),
            "ADAPTER_POLL_SECONDS": "0.05",
            "OTEL_SERVICE_NAME": "legacy-app",
            **env,
        }
        self.service = service
        self.runs: list = []

    def start(self) -> Adapter:
        self.runs.append(self.service("patterns.adapter.log_adapter", self.env, name="adapter"))
        wait_until(lambda: http_ok(f"http://127.0.0.1:{self.port}/readyz"), what="adapter ready")
        return self

    @property
    def proc(self):
        return self.runs[-1]

    def metrics_text(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text

    def samples(self) -> dict[tuple[str, tuple], float]:
        found = {}
        for family in text_string_to_metric_families(self.metrics_text()):
            for s in family.samples:
                found[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return found

    def lines(self, input_name: str) -> tuple[float, float]:
        samples = self.samples()
        return (
            samples.get(("adapter_lines_total", (("input", input_name), ("result", "parsed"))), 0),
            samples.get(
                ("adapter_lines_total", (("input", input_name), ("result", "rejected"))), 0
            ),
        )

    def counted(self, input_name: str) -> float:
        return sum(self.lines(input_name))

    def records(self) -> list[dict]:
        found = []
        for run in self.runs:
            for line in run.output().split("\n"):  # not splitlines: U+0085, U+2028 in bodies
                if line.startswith("{") and '"observed_timestamp"' in line:
                    found.append(json.loads(line))
        return found


def start_collector(
    service, tmp_path: Path, forward_port: int, http_port: int, **env: str
) -> None:
    """The real log-collector, storing under tmp_path/collector (no fsync: speed)."""
    service("patterns.sidecar.collector", {
        "COLLECTOR_FORWARD_HOST": "127.0.0.1", "COLLECTOR_FORWARD_PORT": str(forward_port),
        "COLLECTOR_HTTP_HOST": "127.0.0.1", "COLLECTOR_HTTP_PORT": str(http_port),
        "COLLECTOR_DATA_DIR": str(tmp_path / "collector"), "COLLECTOR_FSYNC": "false", **env,
    }, name="collector")


def stored_queries(tmp_path: Path) -> Counter:
    """How often the collector stored each access-log record, by its url.query."""
    queries: Counter = Counter()
    for segment in sorted((tmp_path / "collector").glob("records-*.jsonl")):
        for line in segment.read_text().splitlines():
            if line.endswith("}"):
                queries[json.loads(line)["record"]["attributes"].get("url.query")] += 1
    return queries


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_every_line_is_accounted_for_through_garbage_rotation_and_restart(service, tmp_path):
    logs = tmp_path / "log"
    logs.mkdir()
    access = logs / "access.log"
    adapter = Adapter(service, tmp_path, f"combined={access}").start()

    # Phase 1: good lines and every kind of bad input.
    append(access, b"".join(good_line(n) for n in range(0, 400)))
    huge = b"A" * 2_000_000 + b"\n"  # split by the follower into 31 pieces of <= 64 KiB
    garbage = [
        b"\x00\x01\x02\xff\xfe binary garbage \x80\x81\n",
        b'10.0.0.1 - - [25/Nov/2026:12:00:00 +0000] "GET /caf\xe9 HTTP/1.1" 200 1 "-" "-" 5\n',
        b"\n",
        huge,
        b"not an access log line\n",
    ]
    append(access, b"".join(garbage))
    append(access, b"".join(good_line(n) for n in range(400, 600)))
    expected_first = 600 + 4 + 31  # good + 4 short bad/odd lines + the huge line's pieces
    wait_until(lambda: adapter.counted(str(access)) == expected_first, timeout=20, what="phase 1")
    samples = adapter.samples()
    parsed, rejected = adapter.lines(str(access))
    assert parsed == 600 + 1  # the invalid UTF-8 one is still a valid request line
    assert rejected == 3 + 31
    assert samples[("adapter_lines_read_total", ())] == parsed + rejected
    assert samples[("adapter_file_events_total", (("event", "invalid_utf8_lines"),))] == 2
    assert samples[("adapter_file_events_total", (("event", "long_lines"),))] == 1
    assert samples[("adapter_file_events_total", (("event", "nul_lines"),))] == 1
    assert samples[("http_requests_total", (("method", "GET"), ("status", "500")))] == 60
    assert samples[("process_resident_memory_bytes", ())] < 96 * 2**20

    # Phase 2: rename rotation, lines on both sides of it.
    append(access, b"".join(good_line(n) for n in range(600, 800)))
    os.rename(access, logs / "access.log.1")
    append(access, b"".join(good_line(n) for n in range(800, 1000)))
    wait_until(
        lambda: adapter.counted(str(access)) == expected_first + 400, timeout=20, what="rotation"
    )

    # Phase 3: copytruncate rotation, right after lines the adapter may not have read yet:
    # they are found in the copy.
    append(access, b"".join(good_line(n) for n in range(1000, 1100)))
    shutil.copyfile(access, logs / "access.log.2")
    os.truncate(access, 0)
    append(access, b"".join(good_line(n) for n in range(1100, 1200)))
    wait_until(
        lambda: adapter.counted(str(access)) == expected_first + 600, timeout=20,
        what="copytruncate",
    )
    events = {dict(k[1]).get("event"): v for k, v in adapter.samples().items()
              if k[0] == "adapter_file_events_total"}
    assert events["rotations"] == 1 and events["truncations"] == 1

    # Phase 4: graceful restart, with lines written while the adapter is down.
    assert adapter.proc.stop() == 0
    append(access, b"".join(good_line(n) for n in range(1200, 1300)))
    adapter.start()
    append(access, b"".join(good_line(n) for n in range(1300, 1500)))
    wait_until(lambda: adapter.counted(str(access)) == 300, timeout=20, what="after restart")
    assert adapter.proc.stop() == 0

    records = adapter.records()
    seen = Counter(r["attributes"]["url.query"] for r in records if "url.query" in r["attributes"])
    assert seen == Counter(f"n={n}" for n in range(1500)), "each line exactly once"
    unparsed = [r for r in records if r["attributes"].get("adapter.unparsed")]
    assert len(unparsed) == 34, "rejected lines are emitted, not dropped"
    assert sum(len(r["body"]) for r in unparsed if set(r["body"]) == {"A"}) == 2_000_000


def peak_rss_mib(pid: int) -> float:
    """The process's high-water resident set (VmHWM), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1]) / 1024


def test_megabytes_of_binary_garbage_are_counted_emitted_and_cost_no_memory(service, tmp_path):
    """Random bytes and a segment with no newline at all, far longer than a line may be,
    on both inputs: the adapter keeps answering, counts every line it read, emits each
    rejected one, reads the good lines after the garbage, and the garbage needs no more
    memory than ordinary lines."""
    logs = tmp_path / "log"
    logs.mkdir()
    access, app_log = logs / "access.log", logs / "app.log"
    access_lines, access_expected = loggen.combined_lines(40_000, seed=4, malformed_every=500)
    app_lines, app_expected = loggen.legacy_lines(10_000, seed=4)
    append(access, ("\n".join(access_lines) + "\n").encode())
    append(app_log, ("\n".join(app_lines) + "\n").encode())
    adapter = Adapter(
        service, tmp_path, f"combined={access},legacy={app_log}",
        ADAPTER_MULTILINE_FLUSH_SECONDS="0.2",
    ).start()
    base = f"http://127.0.0.1:{adapter.port}"

    def status() -> dict:
        return requests.get(base + "/status", timeout=5).json()

    def settled(parsed: dict[str, int]) -> dict | None:
        """The /status once everything written is handled and every line read is counted,
        parsed or rejected, with the parsed ones as expected (none held)."""
        state = status()
        inputs = {i["glob"]: i for i in state["inputs"]}
        counted = sum(i["parsed"] + i["rejected"] for i in inputs.values())
        done = all(inputs[name]["parsed"] == n for name, n in parsed.items())
        idle = state["backlog_bytes"] == 0 and not state["lines_held"]
        return state if done and idle and counted == state["lines_read"] else None

    parsed = {str(access): access_expected.parsed, str(app_log): app_expected.parsed}
    before = wait_until(lambda: settled(parsed), timeout=60, what="the ordinary logs read")

    answers: list[object] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            try:
                answers.append(requests.get(base + "/healthz", timeout=2).status_code)
            except requests.RequestException as exc:
                answers.append(exc)
            stop.wait(0.1)

    max_line = 65536  # ADAPTER_MAX_LINE_BYTES' default, as in the pod

    def garbage(path: Path) -> None:
        append(path, os.urandom(4 * 2**20))
        append(path, os.urandom(20 * max_line).replace(b"\n", b"") + b"\n")

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for path in (access, app_log):
            garbage(path)
        wait_until(lambda: settled(parsed), timeout=90, what="the first garbage read")
        first_peak = peak_rss_mib(adapter.proc.pid)
        # As much garbage again, then good lines: the first must parse as before. A header
        # longer than a line may be: its first piece is still a header (one parsed line),
        # its next pieces overflow ADAPTER_MAX_RECORD_BYTES and are rejected.
        long_header = b"2026-11-25 12:00:01,000 WARN [main] shop - " + b"x" * 3 * max_line
        for path, good in (
            (access, b"".join(good_line(n) for n in range(100))),
            (app_log, b"2026-11-25 12:00:00,000 INFO [main] shop - after the garbage\n"
             + long_header + b"\n"),
        ):
            garbage(path)
            append(path, good)
        parsed[str(access)] += 100
        parsed[str(app_log)] += 2
        after = wait_until(lambda: settled(parsed), timeout=90, what="the good lines after")
        second_peak = peak_rss_mib(adapter.proc.pid)
    finally:
        stop.set()
        prober.join()
    assert answers and all(a == 200 for a in answers), "the adapter kept answering /healthz"
    assert after["lines_read"] - before["lines_read"] > 60_000  # ~1 random line per 256 bytes
    # Memory does not grow with the garbage: 8 MiB more of it moved the high-water mark by
    # far less than its size. The bound is half the pod's 128Mi limit (k8s/adapter); the
    # adapter idles at ~28 MiB, peaks at ~45 reading ordinary lines at full speed, ~52 here.
    assert second_peak - first_peak < 4, (first_peak, second_peak)
    assert second_peak < 64, (first_peak, second_peak)

    samples = adapter.samples()
    lines_total = sum(v for (name, _), v in samples.items() if name == "adapter_lines_total")
    assert samples[("adapter_lines_read_total", ())] == lines_total + samples[
        ("adapter_lines_held", ())
    ]
    events = {dict(k[1])["event"]: v for k, v in samples.items()
              if k[0] == "adapter_file_events_total"}
    assert events["long_lines"] >= 3 and events["invalid_utf8_lines"] > 0
    assert events["nul_lines"] > 0

    assert adapter.proc.stop() == 0
    records = adapter.records()
    for state in after["inputs"]:
        unparsed = [r for r in records if r["attributes"]["log.file.path"] == state["glob"]
                    and r["attributes"].get("adapter.unparsed")]
        assert len(unparsed) == state["rejected"], "every rejected line is emitted, flagged"
        # A piece holds at most ADAPTER_MAX_LINE_BYTES bytes, each character one or more.
        assert max(len(r["body"]) for r in unparsed) <= max_line
    assert [r for r in records if r["body"] == "after the garbage"]
    warn = [r for r in records if r.get("severity_text") == "WARN"
            and r["attributes"]["log.file.path"] == str(app_log)]
    assert set(warn[-1]["body"]) == {"x"} and len(warn[-1]["body"]) < max_line, "first piece"


def test_a_traceback_cut_by_a_restart_is_emitted_whole_once(service, tmp_path):
    logs = tmp_path / "log"
    logs.mkdir()
    app_log = logs / "app.log"
    # No quiet flush within the test (however slow the machine): a record completes only
    # when the next header arrives. A restart (not the app's end) cuts the record: the
    # shutdown time is shorter than the quiet flush, so it is not emitted half.
    adapter = Adapter(
        service, tmp_path, f"legacy={app_log}", ADAPTER_MULTILINE_FLUSH_SECONDS="3600",
        ADAPTER_SHUTDOWN_TIMEOUT="1",
    ).start()

    def held() -> float:
        return adapter.samples()[("adapter_lines_held", ())]

    append(app_log, b"2026-11-25 12:00:00,001 INFO [main] shop - before\n")
    wait_until(lambda: held() == 1, what="first record held")
    # Half a traceback, over two reads, then a restart before the quiet period ends.
    append(
        app_log,
        b"2026-11-25 12:00:01,002 ERROR [main] shop - failed\nTraceback (most recent call last):\n",
    )
    wait_until(lambda: held() == 2, what="traceback held")
    assert adapter.counted(str(app_log)) == 1, "'before' is complete once 'failed' begins"
    append(app_log, b'  File "shop.py", line 3, in pay\n')
    wait_until(lambda: held() == 3, what="traceback held across two chunks")
    adapter.proc.signal(signal.SIGTERM)
    assert adapter.proc.wait() == 0
    append(
        app_log,
        b"ValueError: declined\n2026-11-25 12:00:02,003 INFO [main] shop - after\n"
        b"2026-11-25 12:00:03,004 INFO [main] shop - end\n",  # completes "after"
    )
    adapter.start()
    wait_until(lambda: adapter.counted(str(app_log)) == 5, what="whole traceback after restart")
    wait_until(lambda: len(adapter.records()) == 3, what="three records")
    bodies = [r["body"] for r in adapter.records()]
    assert bodies == [
        "before",
        'failed\nTraceback (most recent call last):\n  File "shop.py", line 3, in pay\n'
        "ValueError: declined",
        "after",
    ]
    assert adapter.records()[1]["attributes"]["exception.type"] == "ValueError"


def test_legacy_app_files_become_records_and_metrics(service, tmp_path):
    """The demo pair as processes: real gunicorn access log and app log."""
    logs = tmp_path / "log"
    app_port = free_port()
    app = service(
        "patterns.adapter.legacy_app",
        {
            "LEGACY_APP_HOST": "127.0.0.1",
            "LEGACY_APP_PORT": str(app_port),
            "LEGACY_APP_LOG_DIR": str(logs),
        },
        name="legacy-app",
    )
    wait_until(lambda: http_ok(f"http://127.0.0.1:{app_port}/healthz"), timeout=20, what="app")
    adapter = Adapter(
        service,
        tmp_path,
        f"combined={logs}/access.log,legacy={logs}/app.log",
        ADAPTER_MULTILINE_FLUSH_SECONDS="0.3",
    ).start()
    base = f"http://127.0.0.1:{app_port}"
    for _ in range(3):
        requests.get(base + "/checkout?fail=1", timeout=5)
        requests.get(base + "/orders/4242", timeout=5)
        requests.get(base + "/orders/7", timeout=5)
    expected = {
        ("http_requests_total", (("method", "GET"), ("status", "500"))): 3,
        ("http_requests_total", (("method", "GET"), ("status", "404"))): 3,
        ("http_requests_by_path_total", (("path", "/checkout"), ("status_class", "5xx"))): 3,
        ("app_log_records_total", (("severity", "ERROR"),)): 3,
        ("app_log_records_total", (("severity", "WARN"),)): 3,
    }
    # The two files are read independently: wait until both have been read this far.
    samples = wait_until(
        lambda: (s := adapter.samples()) and all(s.get(k) == v for k, v in expected.items())
        and s,
        what="the requests and app records counted",
    )
    assert (
        samples[("adapter_lines_total", (("input", f"{logs}/access.log"), ("result", "rejected")))]
        == 0
    )
    errors = [
        r
        for r in adapter.records()
        if r.get("severity_text") == "ERROR" and "exception.type" in r["attributes"]
    ]
    assert len(errors) == 3
    assert errors[0]["attributes"]["exception.type"].endswith("PaymentDeclined")
    app.stop()


def test_exposition_passes_promtool(service, tmp_path):
    promtool = require_tool("promtool", "apt-get install prometheus")
    logs = tmp_path / "log"
    logs.mkdir()
    lines, _ = loggen.combined_lines(500, seed=2, malformed_every=50)
    (logs / "access.log").write_text("\n".join(lines) + "\n")
    app_lines, _ = loggen.legacy_lines(50, seed=2)
    (logs / "app.log").write_text("\n".join(app_lines) + "\n")
    adapter = Adapter(
        service,
        tmp_path,
        f"combined={logs}/access.log,legacy={logs}/app.log",
        ADAPTER_OUTPUT="none",
        ADAPTER_MULTILINE_FLUSH_SECONDS="0.2",
    ).start()
    wait_until(lambda: adapter.counted(f"{logs}/access.log") == 500, what="access log read")
    wait_until(lambda: adapter.counted(f"{logs}/app.log") == len(app_lines), what="app log read")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=adapter.metrics_text(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", "no lint findings"


def guide_query() -> str:
    """The lab guide's "error rate per path" PromQL, exactly as the reader copies it."""
    guide = (ROOT / "patterns" / "adapter" / "README.md").read_text()
    return guide.split("```promql\n", 1)[1].split("```", 1)[0]


def test_a_real_prometheus_answers_the_lab_guide_with_the_inputs_counts(service, tmp_path):
    """Both inputs scraped by a real Prometheus: every series the issue asked for equals
    the count computed from the input, and the lab guide's rate() queries give the ratios
    computed from it, 0 included for a path that never fails."""
    prometheus = require_tool("prometheus", "apt-get install prometheus")
    logs = tmp_path / "log"
    logs.mkdir()
    access_lines, access = loggen.combined_lines(1000, seed=9, malformed_every=100)
    app_lines, app = loggen.legacy_lines(200, seed=9)
    access_text = "\n".join(access_lines) + "\n"
    app_text = "\n".join(app_lines) + "\n"
    (logs / "access.log").write_text(access_text)
    (logs / "app.log").write_text(app_text)
    access_input, app_input = f"{logs}/access.log", f"{logs}/app.log"
    adapter = Adapter(
        service, tmp_path, f"combined={access_input},legacy={app_input}",
        ADAPTER_OUTPUT="none", ADAPTER_MULTILINE_FLUSH_SECONDS="0.2",
    ).start()
    wait_until(lambda: adapter.counted(access_input) == len(access_lines), what="access log")
    wait_until(lambda: adapter.counted(app_input) == len(app_lines), what="app log")

    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 500ms, scrape_timeout: 500ms, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: legacy-app\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{adapter.port}']}}]\n"
    )
    log_file = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{prom_port}/api/v1"

    def query(expr: str) -> list[dict]:
        try:
            body = requests.get(f"{api}/query", params={"query": expr}, timeout=5).json()
        except (requests.RequestException, ValueError):
            return []
        return body.get("data", {}).get("result", []) if body.get("status") == "success" else []

    def series(name: str) -> dict[tuple, float]:
        """name's latest samples, keyed by their labels without job and instance."""
        return {
            tuple(sorted((k, v) for k, v in r["metric"].items()
                         if k not in ("__name__", "job", "instance"))): float(r["value"][1])
            for r in query(name)
        }

    def by(labels: tuple[str, ...], counts, times: int) -> dict[tuple, float]:
        return {
            tuple(sorted(zip(labels, key if isinstance(key, tuple) else (key,), strict=True))):
            float(times * n)
            for key, n in counts.items()
        }

    def lines(times: int) -> dict[tuple, float]:
        return by(("input", "result"), {
            (access_input, "parsed"): access.parsed, (access_input, "rejected"): access.rejected,
            (app_input, "parsed"): app.parsed, (app_input, "rejected"): app.rejected,
        }, times)

    try:
        wait_until(lambda: query('up{job="legacy-app"} == 1'), timeout=30, what="target up")
        wait_until(lambda: series("adapter_lines_total") == lines(1), timeout=30,
                   what="the whole input scraped")
        # The same input once more: rate() needs an increase between two scrapes, and
        # with every series growing by the same share at the same scrapes, Prometheus'
        # extrapolation scales them all alike, so its ratios are the input's exactly.
        append(logs / "access.log", access_text.encode())
        append(logs / "app.log", app_text.encode())
        wait_until(lambda: series("adapter_lines_total") == lines(2), timeout=30,
                   what="the input's second copy scraped")

        assert series("http_requests_total") == by(("method", "status"), access.requests, 2)
        assert series("http_response_size_bytes_total") == by(
            ("method", "status"), access.response_bytes, 2
        )
        cumulative = accumulate(access.duration_buckets)
        assert series("http_request_duration_seconds_bucket") == {
            (("le", "+Inf" if bound == float("inf") else repr(bound)),): 2.0 * count
            for bound, count in zip((*DURATION_BUCKETS, float("inf")), cumulative, strict=True)
        }
        assert series("http_request_duration_seconds_count") == {(): 2.0 * access.parsed}
        assert series("http_request_duration_seconds_sum")[()] == pytest.approx(
            2 * access.duration_sum_us / 1e6
        )
        assert series("app_log_records_total") == by(("severity",), app.app_records, 2)
        assert series("http_requests_by_path_total") == by(
            ("path", "status_class"), access.by_path, 2
        )

        paths = {path for path, _ in access.by_path}
        expected_rates = {
            path: access.by_path[(path, "5xx")]
            / sum(n for (p, _), n in access.by_path.items() if p == path)
            for path in paths
        }
        assert expected_rates["/healthz"] == 0 and expected_rates["/checkout"] > 0
        got = {r["metric"]["path"]: float(r["value"][1]) for r in query(guide_query())}
        assert got == pytest.approx(expected_rates, rel=1e-9)
        requests_5xx = sum(n for (_, status), n in access.requests.items() if status[0] == "5")
        whole = query(
            'sum(rate(http_requests_total{status=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))'
        )
        assert float(whole[0]["value"][1]) == pytest.approx(requests_5xx / access.parsed, rel=1e-9)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()


def test_forward_output_reaches_the_collector(service, tmp_path):
    forward_port, http_port = free_port(), free_port()
    start_collector(service, tmp_path, forward_port, http_port)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{http_port}/readyz"), what="collector")
    logs = tmp_path / "log"
    logs.mkdir()
    append(logs / "access.log", b"".join(good_line(n) for n in range(100)) + b"junk\n")
    Adapter(
        service,
        tmp_path,
        f"combined={logs}/access.log",
        ADAPTER_OUTPUT="forward",
        FLUENT_HOST="127.0.0.1",
        FLUENT_PORT=str(forward_port),
        FLUENT_TAG="legacy.access",
    ).start()

    def total() -> int:
        try:
            return int(
                requests.get(f"http://127.0.0.1:{http_port}/api/counts", timeout=2).json()["total"]
            )
        except requests.RequestException:
            return -1

    wait_until(lambda: total() == 101, what="101 records at the collector")
    stored = [
        json.loads(line)
        for segment in sorted((tmp_path / "collector").glob("records-*.jsonl"))
        for line in segment.read_text().splitlines()
    ]
    assert {event["tag"] for event in stored} == {"legacy.access"}
    first = stored[0]["record"]
    assert first["attributes"]["url.query"] == "n=0"
    # The event time travels as the Forward EventTime: the access log's, not the read time.
    assert stored[0]["time"] == calendar.timegm((2026, 11, 25, 12, 0, 0, 0, 0, 0))
    assert sum(1 for event in stored if event["record"]["attributes"].get("adapter.unparsed")) == 1


def test_sigkill_loses_nothing_and_forward_waits_out_a_collector_outage(service, tmp_path):
    """At-least-once: after SIGKILL, lines handled but not yet committed are sent again;
    while the collector is down the adapter waits and the lines stay in the file."""
    forward_port, http_port = free_port(), free_port()
    logs = tmp_path / "log"
    logs.mkdir()
    access = logs / "access.log"
    append(access, b"".join(good_line(n) for n in range(300)))
    adapter = Adapter(
        service, tmp_path, f"combined={access}", ADAPTER_OUTPUT="forward",
        FLUENT_HOST="127.0.0.1", FLUENT_PORT=str(forward_port),
    ).start()
    # No collector yet: the adapter retries, the lines stay in the file.
    wait_until(lambda: adapter.samples()[("adapter_backlog_bytes", ())] > 0,
               what="a backlog while the collector is down")
    assert adapter.proc.alive()

    start_collector(service, tmp_path, forward_port, http_port)

    def stored() -> Counter:
        return stored_queries(tmp_path)

    wait_until(lambda: len(stored()) == 300, timeout=30, what="backlog delivered")
    adapter.proc.signal(signal.SIGKILL)
    adapter.proc.wait()
    append(access, b"".join(good_line(n) for n in range(300, 600)))
    adapter.start()
    wait_until(lambda: len(stored()) == 600, timeout=30, what="lines after SIGKILL")
    assert set(stored()) == {f"n={n}" for n in range(600)}, "nothing lost"
    # The collector stores before it acks: the adapter commits a moment later.
    wait_until(lambda: adapter.samples()[("adapter_backlog_bytes", ())] == 0,
               what="the backlog committed")


def test_bad_settings_stop_the_adapter_at_start_with_their_names(service, tmp_path):
    bad = service("patterns.adapter.log_adapter", {
        "ADAPTER_INPUTS": "apache=/var/log/app/access.log", "ADAPTER_HTTP_PORT": str(free_port()),
    }, name="bad-inputs")
    assert bad.wait() == 2
    assert "ADAPTER_INPUTS" in bad.output()
    (tmp_path / "file").write_text("")
    unusable = service("patterns.adapter.log_adapter", {
        "ADAPTER_INPUTS": f"combined={tmp_path}/access.log",
        "ADAPTER_STATE_DIR": str(tmp_path / "file" / "state"),
        "ADAPTER_HTTP_HOST": "127.0.0.1", "ADAPTER_HTTP_PORT": str(free_port()),
    }, name="bad-state")
    assert unusable.wait() == 2
    assert "ADAPTER_STATE_DIR" in unusable.output()


def test_without_inotify_files_rotated_during_a_collector_outage_are_not_lost(service, tmp_path):
    """Polling mode (ADAPTER_INOTIFY=false, as on machines without inotify): while the
    adapter waits for the collector it keeps polling, so every generation the app rotated
    away meanwhile was opened and held, and is delivered once the collector is back."""
    forward_port, http_port = free_port(), free_port()
    logs = tmp_path / "log"
    logs.mkdir()
    access = logs / "access.log"
    append(access, b"".join(good_line(n) for n in range(100)))
    adapter = Adapter(
        service, tmp_path, f"combined={access}", ADAPTER_OUTPUT="forward",
        FLUENT_HOST="127.0.0.1", FLUENT_PORT=str(forward_port), ADAPTER_INOTIFY="false",
    ).start()
    generations = 6

    def followed() -> float:
        return adapter.samples()[("adapter_files_followed", ())]

    for generation in range(1, generations):
        # The adapter is blocked on the collector, far inside its retry backoff: only its
        # polling while blocked can open each new file before the next rename. Every
        # generation stays open (nothing is delivered yet), so the count says it was seen.
        wait_until(lambda g=generation: followed() == g, what=f"generation {generation} open")
        access.rename(logs / f"access.log.{generation}")
        append(access, b"".join(good_line(n) for n in range(generation * 100,
                                                              (generation + 1) * 100)))
    wait_until(lambda: followed() == generations, what="the last generation open")
    assert adapter.proc.alive()
    start_collector(service, tmp_path, forward_port, http_port)

    def stored() -> Counter:
        return stored_queries(tmp_path)

    expected = {f"n={n}" for n in range(generations * 100)}
    wait_until(lambda: set(stored()) == expected, timeout=30,
               what=f"all {generations} generations delivered")
    assert max(stored().values()) == 1, "nothing duplicated"


def test_sigterm_adapts_what_the_app_wrote_before_it_exited(service, tmp_path):
    """A native sidecar gets SIGTERM once the app has exited, and the pod's emptyDir goes
    with it: everything the app wrote, its last traceback and an unterminated last line
    included, is adapted and emitted before the adapter exits 0."""
    logs = tmp_path / "log"
    logs.mkdir()
    access, app_log = logs / "access.log", logs / "app.log"
    adapter = Adapter(
        service, tmp_path, f"combined={access},legacy={app_log}",
        ADAPTER_MULTILINE_FLUSH_SECONDS="0.5", ADAPTER_SHUTDOWN_TIMEOUT="10",
    ).start()
    lines = 20_000
    # The app's last words, all at once, then SIGTERM before the adapter can have read
    # them: many access-log lines (the last one unterminated) and a final traceback.
    append(access, b"".join(good_line(n) for n in range(lines - 1)))
    append(access, good_line(lines - 1).rstrip(b"\n"))
    append(app_log, b"2026-11-25 12:00:01,002 ERROR [main] shop - failed\n"
                    b"Traceback (most recent call last):\n"
                    b'  File "shop.py", line 3, in pay\n'
                    b"ValueError: declined\n")
    adapter.proc.signal(signal.SIGTERM)
    assert adapter.proc.wait(timeout=20) == 0
    records = adapter.records()
    access_records = [r for r in records
                      if r["attributes"].get("log.file.path") == str(access)]
    assert len(access_records) == lines
    queries = {r["attributes"].get("url.query") for r in access_records}
    assert queries == {f"n={n}" for n in range(lines)}, "every line, the unterminated one too"
    tracebacks = [r for r in records if r["attributes"].get("log.file.path") == str(app_log)]
    assert [r["attributes"].get("exception.type") for r in tracebacks] == ["ValueError"]
    assert tracebacks[0]["body"].endswith("ValueError: declined")


def test_a_stopped_adapter_leaves_one_checkpoint_file_that_a_restart_resumes(service, tmp_path):
    """Commits append to a journal; at SIGTERM the adapter folds it into one checkpoint
    file (durable against a power cut), and the next start reads only what is new."""
    logs = tmp_path / "log"
    logs.mkdir()
    access = logs / "access.log"
    adapter = Adapter(service, tmp_path, f"combined={access}").start()
    for batch in range(3):  # several commits: the journal has records
        append(access, b"".join(good_line(n) for n in range(batch * 100, batch * 100 + 100)))
        wait_until(lambda b=batch: adapter.lines(str(access))[0] == (b + 1) * 100,
                   what=f"batch {batch} adapted")
    adapter.proc.signal(signal.SIGTERM)
    assert adapter.proc.wait(timeout=20) == 0
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["checkpoints.json"]
    append(access, good_line(300))
    adapter.start()
    wait_until(lambda: adapter.lines(str(access))[0] == 1, what="the new line adapted")
    second = [json.loads(line) for line in adapter.proc.output().split("\n")
              if line.startswith("{") and '"observed_timestamp"' in line]
    queries = [r["attributes"].get("url.query") for r in second]
    assert queries == ["n=300"], "nothing read twice after the restart"
