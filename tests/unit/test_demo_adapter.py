"""The adapter demo's "explore" hints show twins: one request's line in access.log and the
JSON record the adapter made of that very line, as the lab guide's step 2 does (before,
they showed the last lines of each, a health check's line next to another request's
record)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from demo import adapter
from patterns.adapter.log_adapter.formats import Context, new_decoder
from patterns.adapter.log_adapter.metrics import AdapterMetrics
from patterns.adapter.log_adapter.output import dumps

ACCESS_LOG = "/var/log/app/access.log"
OBSERVED = "2026-12-02T02:00:00.000Z"


def _line(path: str, status: int, micros: int) -> str:
    return (f'127.0.0.1 - - [02/Dec/2026:02:00:0{micros % 10} +0000] "GET {path} HTTP/1.1" '
            f'{status} 9 "-" "python-requests/2.32.3" {micros}')


def _lab(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """An access.log of a demo run (probes, /traffic's requests, the twin request among
    them, and orders whose paths start like the twin's) and the adapter's stdout for it:
    a record per line, its own JSON logs between."""
    lines = [_line("/healthz", 200, 101)]
    for i in range(3):
        lines += [_line(path, status, 200 + i) for path, status in (
            ("/", 200), ("/orders", 200), ("/orders/7", 200), ("/orders/4242", 404),
            ("/orders/20260", 404))]
    lines += [_line(adapter.TWIN_PATH, 404, 333), _line("/healthz", 200, 102)]
    context = Context("access", AdapterMetrics(["access"]), True,
                      {"service.name": "legacy-app"})
    decoder = new_decoder("combined", context, ACCESS_LOG)
    records = decoder.feed(lines, OBSERVED) + decoder.flush(OBSERVED)
    assert len(records) == len(lines)
    own_log = b'{"level":"info","service":"log-adapter","message":"following ' \
              + ACCESS_LOG.encode() + b'"}'
    stdout = b"\n".join([own_log, *(dumps(record) for record in records), own_log]) + b"\n"
    (tmp_path / "access.log").write_text("\n".join(lines) + "\n")
    (tmp_path / "adapter-stdout.log").write_bytes(stdout)
    return tmp_path / "access.log", tmp_path / "adapter-stdout.log", lines


def _sh(command: str) -> list[str]:
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{command}: exit {result.returncode} {result.stderr}"
    return result.stdout.splitlines()


@pytest.mark.parametrize("runtime", ["kind", "podman", "compose"])
def test_the_explore_hints_show_one_requests_line_and_its_json_twin(
        runtime: str, tmp_path: Path) -> None:
    access_log, adapter_stdout, lines = _lab(tmp_path)
    hints = adapter.explore_commands(runtime, "c0ffee", "beef00")
    [line_hint] = [hint for hint in hints if adapter.TWIN_LINE in hint]
    [record_hint] = [hint for hint in hints if adapter.TWIN_RECORD in hint]
    assert line_hint.split(adapter.TWIN_LINE)[0].strip().endswith(
        {"kind": "-c main --", "podman": "-main", "compose": "docker exec c0ffee"}[runtime])
    assert record_hint.split("|")[0].strip().endswith(
        {"kind": "-c adapter", "podman": "-adapter", "compose": "docker logs beef00"}[runtime])

    # What each finds, run on the files the containers hold and print.
    [line] = _sh(adapter.TWIN_LINE.replace(ACCESS_LOG, str(access_log)))
    [record] = _sh(f"{adapter.TWIN_RECORD} {adapter_stdout}")
    assert f"GET {adapter.TWIN_PATH} " in line and line in lines
    assert json.loads(record)["body"] == line, "the record is the line's own twin"


def test_the_twin_request_is_one_that_traffic_never_makes() -> None:
    app = Path(adapter.__file__).parent.parent / "patterns/adapter/legacy_app/app.py"
    assert f'"{adapter.TWIN_PATH}"' not in app.read_text(), \
        "/traffic asking for the twin's path would give the hints many lines and records"
