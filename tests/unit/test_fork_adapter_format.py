"""The adapter guide's "Fork it for your own format" section, done as it says: a copy of
`patterns/` gets the section's new file (tests/unit/fork_adapter_format/logfmt.py, which
the section shows verbatim) and its one registration line, and the log-adapter run from
that copy reads a logfmt file: the record on stdout, the request in /metrics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, free_port, wait_until
from tests.fork import fenced_blocks, fork_patterns, guide_section, register

GUIDE = ROOT / "patterns" / "adapter" / "README.md"
SECTION = "## Fork it for your own format"
EXAMPLE = Path(__file__).parent / "fork_adapter_format" / "logfmt.py"
NEW_FILE = Path("patterns/adapter/log_adapter/formats/logfmt.py")
REGISTRY = Path("patterns/adapter/log_adapter/formats/__init__.py")
REGISTRATION = '    "logfmt": "logfmt:LogfmtDecoder",'
LINE = (
    'time=2026-11-25T12:00:00Z level=info msg="order placed" method=POST path=/orders/7'
    " status=201 duration=0.012"
)


def section() -> str:
    return guide_section(GUIDE, SECTION)


def test_the_section_shows_the_tested_file_its_registration_and_its_line() -> None:
    blocks = [(lang, body) for lang, _words, body in fenced_blocks(section())]
    python = [body for lang, body in blocks if lang == "python"]
    assert EXAMPLE.read_text() in python, f"the section shows {EXAMPLE.name} as it is"
    assert REGISTRATION + "\n" in python, "and the one line that registers it"
    assert any(LINE in body for lang, body in blocks if lang == "sh"), "and the line it tries"
    assert str(NEW_FILE) in section() and str(REGISTRY) in section()


def test_one_new_file_and_one_line_make_a_format(tmp_path: Path) -> None:
    fork = fork_patterns(tmp_path / "fork")
    # Step 1: the new file.
    shutil.copyfile(EXAMPLE, fork / NEW_FILE)
    # Step 2: its line in FORMATS.
    register(fork / REGISTRY, "FORMATS: dict[str, str] = {\n", REGISTRATION)

    # Step 3: try it.
    logs = tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    out = tmp_path / "out.jsonl"
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "ADAPTER_INPUTS": f"logfmt={logs}/*.log",
        "ADAPTER_STATE_DIR": str(tmp_path / "state"),
        "ADAPTER_HTTP_HOST": "127.0.0.1",
        "ADAPTER_HTTP_PORT": str(port),
    }
    with open(out, "wb") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "patterns.adapter.log_adapter"],
            cwd=fork,  # the copy's patterns/ comes first on sys.path
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )
    try:
        (logs / "app.log").write_text(LINE + "\n")

        def record() -> dict | None:
            for line in out.read_text().splitlines():
                if line.startswith("{") and "observed_timestamp" in line:
                    return json.loads(line)
            assert proc.poll() is None, out.read_text()
            return None

        found = wait_until(record, timeout=20, what="the logfmt record on stdout")
        assert found["timestamp"] == "2026-11-25T12:00:00.000Z"
        assert (found["severity_text"], found["severity_number"]) == ("info", 9)
        assert found["body"] == "order placed"
        assert found["attributes"] == {
            "http.request.method": "POST",
            "url.path": "/orders/7",
            "http.response.status_code": 201,
            "http.server.request.duration": 0.012,
            "log.file.path": f"{logs}/app.log",
        }
        exposition = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(exposition)
            for s in family.samples
        }
        assert samples[("http_requests_total", (("method", "POST"), ("status", "201")))] == 1
        path = (("path", "/orders/:id"), ("status_class", "2xx"))
        assert samples[("http_requests_by_path_total", path)] == 1
        assert samples[("adapter_lines_total", (("input", f"{logs}/*.log"),
                                                ("result", "parsed")))] == 1
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0, out.read_text()


def test_the_example_rejects_what_is_not_logfmt(tmp_path: Path) -> None:
    """The example keeps the adapter's rules: a line that is not all pairs, an unreadable
    time, or a number out of range is rejected, emitted flagged and counted."""
    code = (
        "import sys, importlib.util\n"
        "spec = importlib.util.spec_from_file_location('logfmt', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "from patterns.adapter.log_adapter.formats import Context\n"
        "from patterns.adapter.log_adapter.metrics import AdapterMetrics\n"
        "metrics = AdapterMetrics(['in'])\n"
        "decoder = module.LogfmtDecoder(Context('in', metrics, True, {}), '/x.log')\n"
        "records = decoder.feed(sys.stdin.read().splitlines(), 'now')\n"
        "print([bool(r['attributes'].get('adapter.unparsed')) for r in records],"
        " metrics.lines['in'])\n"
    )
    lines = [
        LINE,
        "just a sentence",
        "time=yesterday msg=x",
        "status=999 method=GET msg=x",
        "bytes=" + "9" * 40 + " msg=x",
        "duration=nan msg=x",
        'level=warn msg="a \\"quoted\\" word" user=ann',
    ]
    result = subprocess.run(
        [sys.executable, "-c", code, str(EXAMPLE)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert result.stdout.strip() == (
        "[False, True, True, True, True, True, False] [2, 5]"
    )
