"""What a running pod promises, checked from inside its containers, the same way on every
runtime that runs the manifests: the kind tier (`kubectl exec`) and the podman tier
(`podman exec`) hand these functions an `Exec` for each container and assert the same
things with the same code.

An `Exec` runs argv inside one container, as the container's own user, and returns
(exit code, stdout) when the command exited 0, else (exit code, its stdout and stderr).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.in_pod import (
    ESTABLISHED_TCP_SCRIPT,
    http_get_script,
    http_post_json_script,
    parse_http_response,
)

Exec = Callable[..., tuple[int, str]]
RUN_AS = "10001"
EROFS = 30


def python(exec: Exec, code: str) -> tuple[int, str]:
    return exec("python3", "-c", code)


def http_get(exec: Exec, url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(HTTP status, body) of a GET made from inside the container; 0 when it failed."""
    return parse_http_response(*python(exec, http_get_script(url, timeout)))


def http_post_json(exec: Exec, url: str, payload: Any, timeout: float = 10.0) -> tuple[int, str]:
    return parse_http_response(*python(exec, http_post_json_script(url, payload, timeout)))


def file_identity(exec: Exec, path: str) -> tuple[int, int, int]:
    """(device, inode, size) of `path` as the container sees it."""
    exit_code, output = python(
        exec, f"import os; st = os.stat({path!r}); print(st.st_dev, st.st_ino, st.st_size)")
    assert exit_code == 0, output
    dev, ino, size = output.split()
    return int(dev), int(ino), int(size)


def assert_same_file(writer: Exec, writer_path: str, reader: Exec, reader_path: str) -> None:
    """The file the app writes and the one its sidecar reads are one file on the shared
    volume (same device and inode), and it is not empty. Sizes are not compared: the app
    may write between the two looks."""
    app_dev, app_ino, app_size = file_identity(writer, writer_path)
    side_dev, side_ino, _ = file_identity(reader, reader_path)
    assert (app_dev, app_ino) == (side_dev, side_ino), (writer_path, reader_path)
    assert app_size > 0, f"{writer_path} is empty"


def assert_reads_but_cannot_write(exec: Exec, path: str) -> None:
    """The sidecar's mount of the app's volume is read-only: it reads the file, and opening
    it for writing fails with EROFS."""
    exit_code, output = python(
        exec,
        f"import os; print(len(open({path!r}, 'rb').read()) > 0)\n"
        f"try:\n    open({path!r}, 'a')\nexcept OSError as e:\n    print('denied', e.errno)")
    assert exit_code == 0, output
    assert output.split() == ["True", "denied", str(EROFS)], output


def assert_hardened(exec: Exec, name: str) -> None:
    """What the restricted profile and the manifests promise, seen from inside the running
    container: uid 10001 for every id, no effective capability, no_new_privs, a root
    filesystem mounted read-only, and writing to it refused."""
    exit_code, status = exec("cat", "/proc/1/status")
    assert exit_code == 0, status
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split() == [RUN_AS] * 4, (name, fields["Uid"])
    assert int(fields["CapEff"].strip(), 16) == 0, (name, fields["CapEff"])
    assert fields["NoNewPrivs"].strip() == "1", name
    exit_code, mounts = exec("cat", "/proc/1/mounts")
    assert exit_code == 0, mounts
    root = [line.split() for line in mounts.splitlines() if line.split()[1:2] == ["/"]]
    assert root and root[-1][3].split(",")[0] == "ro", (name, root)
    exit_code, output = exec("sh", "-c", "echo x > /podpatterns-probe")
    assert exit_code != 0 and "Read-only file system" in output, (name, output)


def count_lines(exec: Exec, glob: str) -> int:
    """Lines in every file matching `glob` (the log and its rotated copies)."""
    exit_code, output = python(
        exec, f"import glob; print(sum(open(p, 'rb').read().count(b'\\n') "
              f"for p in glob.glob({glob!r})))")
    assert exit_code == 0, output
    return int(output)


def metric_samples(exec: Exec, url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus samples at `url`, fetched from inside the container, as
    {(name, sorted labels): value}."""
    status, body = http_get(exec, url)
    assert status == 200, body
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def collector_tags(exec: Exec, url: str) -> dict[str, int]:
    """The collector's records per tag (its /api/counts)."""
    status, body = http_get(exec, url)
    assert status == 200, body
    return {tag: int(count) for tag, count in json.loads(body)["tags"].items()}


def every_line_collected_once(app: Exec, log_glob: str, collector: Exec, counts_url: str,
                              tag: str, at_least: int) -> bool:
    """True once the collector (its /api/counts at `counts_url`, fetched from inside
    `collector`) holds exactly as many records under the app's shipper's own `tag` as the
    app's log files (`log_glob`: the log and its rotated copies) have lines, and at least
    `at_least`: none lost, none twice. The collector's total would not do: other shippers
    (the classic variant, the Job) ship to it too. Reads the files first: a line the app
    writes between the two reads (a probe's request) makes it False, and the caller polls
    again."""
    logged = count_lines(app, log_glob)
    return logged >= at_least and collector_tags(collector, counts_url).get(tag) == logged


def every_access_line_counted(app: Exec, access_log: str, metrics_from: Exec,
                              metrics_url: str, adapter_path: str, at_least: int) -> bool:
    """True once the adapter's metrics (fetched at `metrics_url` from inside
    `metrics_from`) account for every line of the app's access log: each parsed, none
    rejected, one request each. Reads the file first: a line that arrives between the two
    reads (a probe's request) makes it False, and the caller polls again."""
    lines = count_lines(app, access_log)
    found = metric_samples(metrics_from, metrics_url)
    parsed = found.get(("adapter_lines_total", (("input", adapter_path), ("result", "parsed"))))
    rejected = found.get(("adapter_lines_total",
                          (("input", adapter_path), ("result", "rejected"))))
    requests = sum(v for (name, _), v in found.items() if name == "http_requests_total")
    return lines >= at_least and parsed == lines == requests and rejected == 0


def traceback_records(logs: str) -> list[dict[str, Any]]:
    """The adapter's records (one JSON object per line of its stdout) for log entries
    that carry a traceback."""
    records = [json.loads(line) for line in logs.splitlines()
               if line.startswith("{") and '"observed_timestamp"' in line]
    return [r for r in records if "exception.type" in r["attributes"]]


def assert_tracebacks_are_single_records(records: list[dict[str, Any]], count: int,
                                         service_name: str, log_path: str) -> None:
    assert len(records) >= count, records
    assert all(r["attributes"]["exception.type"].endswith("PaymentDeclined") for r in records)
    assert all(r["resource"] == {"service.name": service_name} for r in records)
    assert all(r["attributes"]["log.file.path"] == log_path for r in records)


def established_connections(exec: Exec) -> list[dict[str, str]]:
    """Every ESTABLISHED TCP connection the container's own processes hold."""
    exit_code, output = python(exec, ESTABLISHED_TCP_SCRIPT)
    assert exit_code == 0, output
    return list(json.loads(output))


def assert_database_only_on_localhost(app: Exec, app_port: str, database_url: str,
                                      db_namespace: str) -> None:
    """The app holds database connections to 127.0.0.1:5432 only (the ambassador), psql
    from the app's container to the app's own DATABASE_URL reaches the primary over TLS
    that the ambassador verified, and the app's environment names no database host."""
    connections = established_connections(app)
    outgoing = [c for c in connections if not c["local"].endswith(f":{app_port}")]
    assert outgoing, "the app holds no database connection at all"
    assert {c["remote"] for c in outgoing} == {"127.0.0.1:5432"}, connections
    exit_code, output = app("psql", database_url, "-Atc",
                            "SELECT current_setting('cluster_name'), ssl FROM pg_stat_ssl"
                            " WHERE pid = pg_backend_pid()")
    assert exit_code == 0, output
    assert output.strip().splitlines()[-1] == "primary|t", output
    exit_code, env = app("env")
    assert exit_code == 0, env
    assert f".{db_namespace}" not in env, "the app's environment names a database host"


def upstream_roles(view: dict[str, Any]) -> list[tuple[str, bool]]:
    """(role, healthy) of each upstream in the ambassador's /upstreams view."""
    return [(u["role"], u["healthy"]) for u in view["upstreams"]]


def only_one_healthy_primary(view: dict[str, Any]) -> bool:
    healthy = [(u["upstream"], u["role"]) for u in view["upstreams"] if u["healthy"]]
    return len(healthy) == 1 and healthy[0][1] == "primary"
