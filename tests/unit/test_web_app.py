"""The web-app's access log, through Flask's test client: every request is one numbered
line, the file rotates at its size limit without losing a number, bad input is refused."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from patterns.common.config import ConfigError
from patterns.sidecar.web_app.access_log import SEQ_PATTERN, escape
from patterns.sidecar.web_app.app import STATE_KEY, create_app
from patterns.sidecar.web_app.config import Config, load_config

COMBINED = re.compile(
    r"^(?P<remote>\S+) - - \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] "
    r'"(?P<method>\S+) (?P<target>\S+) (?P<proto>\S+)" (?P<status>\d{3}) (?P<size>\d+|-) '
    r'"(?P<referer>[^"]*)" "(?P<agent>[^"]*)" seq=(?P<seq>\d+)$'
)


def make_config(log_dir: Path, **overrides: str) -> Config:
    return load_config({"WEB_APP_LOG_DIR": str(log_dir), **overrides})


def all_lines(log_dir: Path) -> list[str]:
    """Every line still on disk, oldest first (access.log.N ... access.log.1, access.log)."""
    backups = sorted(log_dir.glob("access.log.*"), key=lambda p: -int(p.suffix[1:]))
    lines: list[str] = []
    for path in [*backups, log_dir / "access.log"]:
        lines.extend(path.read_text().splitlines())
    return lines


def sequences(lines: list[str]) -> list[int]:
    numbers = []
    for line in lines:
        match = SEQ_PATTERN.search(line)
        assert match, f"line without a sequence number: {line!r}"
        numbers.append(int(match.group(1)))
    return numbers


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(make_config(tmp_path / "logs"))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def metric(client: FlaskClient, name: str, text: str | None = None) -> float:
    """A value from /metrics (scraping is itself a request, so pass one scrape's text to
    read several values from the same moment)."""
    text = text or client.get("/metrics").get_data(as_text=True)
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_every_request_is_one_combined_line_numbered_in_order(client, tmp_path):
    client.get("/", headers={"User-Agent": "pytest-agent", "Referer": "http://ref/"})
    client.get("/healthz")
    client.get("/no-such-page")

    lines = all_lines(tmp_path / "logs")
    parsed = [match for line in lines if (match := COMBINED.match(line))]
    assert len(parsed) == len(lines) == 3, lines
    assert [(m["method"], m["target"], m["status"], m["seq"]) for m in parsed] == [
        ("GET", "/", "200", "1"),
        ("GET", "/healthz", "200", "2"),
        ("GET", "/no-such-page", "404", "3"),
    ]
    assert (parsed[0]["agent"], parsed[0]["referer"]) == ("pytest-agent", "http://ref/")
    assert int(parsed[0]["size"]) > 0


def test_traffic_writes_n_lines_as_one_contiguous_range(client, tmp_path):
    client.get("/")
    response = client.get("/traffic?n=250")

    assert response.status_code == 200
    body = response.get_json()
    assert body["written"] == 250
    assert (body["first_seq"], body["last_seq"]) == (2, 251)
    # 1 (the page) + 250 synthetic + 1 (the /traffic request itself)
    assert sequences(all_lines(tmp_path / "logs")) == list(range(1, 253))
    scrape = client.get("/metrics").get_data(as_text=True)
    assert metric(client, "web_app_log_lines_total", scrape) == 252
    assert metric(client, "web_app_log_last_sequence", scrape) == 252


def test_stats_say_what_was_written_before_the_stats_request(client):
    client.get("/traffic?n=10")

    stats = client.get("/api/stats").get_json()

    assert stats["lines_written"] == 11 and stats["last_seq"] == 11
    assert (stats["rotations"], stats["write_errors"]) == (0, 0)
    assert stats["log_path"].endswith("/logs/access.log")
    assert client.get("/api/stats").get_json()["last_seq"] == 12


@pytest.mark.parametrize("bad", ["0", "-5", "abc", "1.5", "", "10001"])
def test_bad_n_gets_400_and_writes_nothing_but_its_own_line(client, tmp_path, bad):
    response = client.get(f"/traffic?n={bad}")

    assert response.status_code == 400
    assert "n must be an integer from 1 to 10000" in response.get_json()["error"]
    lines = all_lines(tmp_path / "logs")
    assert len(lines) == 1 and " 400 " in lines[0]


def test_rotation_happens_at_the_size_limit_and_loses_no_number(tmp_path):
    log_dir = tmp_path / "logs"
    app = create_app(make_config(log_dir, WEB_APP_LOG_MAX_BYTES="4096", WEB_APP_LOG_BACKUPS="5"))
    client = app.test_client()

    client.get("/traffic?n=100")  # about 100 bytes a line: two rotations

    files = sorted(p.name for p in log_dir.iterdir())
    assert files == ["access.log", "access.log.1", "access.log.2"]
    for path in log_dir.iterdir():
        assert path.stat().st_size <= 4096, path
    # The backups are full up to the limit: the next line would not have fitted.
    line_size = len(all_lines(log_dir)[0]) + 1
    assert (log_dir / "access.log.1").stat().st_size > 4096 - 2 * line_size
    assert sequences(all_lines(log_dir)) == list(range(1, 102))
    assert metric(client, "web_app_log_rotations_total") == 2


def test_rotation_keeps_only_the_configured_backups(tmp_path):
    log_dir = tmp_path / "logs"
    app = create_app(make_config(log_dir, WEB_APP_LOG_MAX_BYTES="2048", WEB_APP_LOG_BACKUPS="2"))
    client = app.test_client()

    client.get("/traffic?n=500")

    assert sorted(p.name for p in log_dir.iterdir()) == [
        "access.log",
        "access.log.1",
        "access.log.2",
    ]
    kept = sequences(all_lines(log_dir))
    # The oldest lines were rotated away, but what is left is the newest, in order, no gap.
    assert kept == list(range(kept[0], 502))
    assert metric(client, "web_app_log_rotations_total") > 10


def test_a_restarted_app_continues_the_numbering(tmp_path):
    log_dir = tmp_path / "logs"
    first = create_app(make_config(log_dir, WEB_APP_LOG_MAX_BYTES="4096"))
    first.test_client().get("/traffic?n=77")  # seq 1..78, rotated once
    first.extensions[STATE_KEY].close()

    second = create_app(make_config(log_dir, WEB_APP_LOG_MAX_BYTES="4096"))
    response = second.test_client().get("/traffic?n=5")

    assert response.get_json()["first_seq"] == 79
    assert sequences(all_lines(log_dir)) == list(range(1, 85))


def test_concurrent_requests_get_unique_contiguous_numbers(app, tmp_path):
    def hammer() -> None:
        client = app.test_client()
        for _ in range(20):
            assert client.get("/traffic?n=10").status_code == 200

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sequences(all_lines(tmp_path / "logs")) == list(range(1, 4 * 20 * 11 + 1))


def test_client_text_cannot_split_a_line(client, tmp_path):
    # (HTTP clients refuse CR/LF in headers, so the URL carries the newline here; the
    # process test sends raw bytes.)
    client.get("/a%0Ab%22c", headers={"User-Agent": 'evil"\tseq=999', "Referer": "x\x01y"})

    lines = all_lines(tmp_path / "logs")
    assert len(lines) == 1
    match = COMBINED.match(lines[0])
    assert match, lines[0]
    assert match["seq"] == "1"
    assert match["target"] == "/a%0Ab%22c"
    assert match["agent"] == "evil\\x22\\x09seq=999"
    assert match["referer"] == "x\\x01y"


def test_a_full_disk_is_a_507_and_not_ready_never_a_silent_success(tmp_path):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    (log_dir / "access.log").symlink_to("/dev/full")  # every write fails with ENOSPC
    client = create_app(make_config(log_dir)).test_client()

    response = client.get("/traffic?n=5")

    assert response.status_code == 507
    assert response.get_json()["written"] == 0
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200
    assert metric(client, "web_app_log_write_errors_total") >= 5
    assert metric(client, "web_app_log_last_sequence") == 0


def test_after_a_full_disk_the_next_line_starts_clean_with_the_next_number(tmp_path):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    access_log = log_dir / "access.log"
    access_log.symlink_to("/dev/full")
    client = create_app(make_config(log_dir)).test_client()
    assert client.get("/traffic?n=3").status_code == 507

    # Space again, and the file ends with a torn line, as a write cut by ENOSPC leaves it.
    access_log.unlink()
    access_log.write_text('127.0.0.1 - - [25/Nov/2026:13:00:00 +0000] "GET /x HT')
    response = client.get("/traffic?n=2")

    assert response.status_code == 200
    assert (response.get_json()["first_seq"], response.get_json()["last_seq"]) == (1, 2)
    lines = access_log.read_text().splitlines()
    assert lines[0].endswith('"GET /x HT')  # the torn line stays alone on its line
    assert sequences(lines[1:]) == [1, 2, 3]  # 2 synthetic lines, then the request's own
    assert client.get("/readyz").status_code == 200


def test_index_page_says_what_this_is_and_links_the_endpoints(client):
    page = client.get("/").get_data(as_text=True)

    for text in ("sidecar", "/traffic?n=1000", "/metrics", "/healthz", "/readyz", "access.log"):
        assert text in page


def test_config_defaults_and_errors_name_every_bad_variable(tmp_path):
    config = load_config({})
    assert (config.http.host, config.http.port) == ("0.0.0.0", 8080)
    assert str(config.access_log_path) == "/var/log/app/access.log"
    assert (config.log_max_bytes, config.log_backups) == (256 * 1024, 10)

    with pytest.raises(ConfigError) as error:
        load_config(
            {"WEB_APP_PORT": "http", "WEB_APP_LOG_BACKUPS": "0", "WEB_APP_LOG_MAX_BYTES": "12"}
        )
    for name in ("WEB_APP_PORT", "WEB_APP_LOG_BACKUPS", "WEB_APP_LOG_MAX_BYTES"):
        assert name in str(error.value)


def test_escape_keeps_one_field_on_one_ascii_line():
    assert escape('a\nb\r"c\\d') == "a\\x0ab\\x0d\\x22c\\x5cd"
    assert escape("caf\u00e9 \u2603") == "caf\\xe9 \\u2603"
    assert escape("plain/path?q=1") == "plain/path?q=1"
