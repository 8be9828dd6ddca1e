"""The collector's live page in a real browser (headless Chromium) under the policy the
collector sends with it: its inline script and style run, it polls the API and shows the
records as text, and the browser reports no Content-Security-Policy violation."""

from __future__ import annotations

import html
import subprocess
import time
from pathlib import Path
from typing import Any

import msgpack
import requests
from fluent.sender import EventTime

from patterns.common.forward.client import ForwardClient
from tests.conftest import free_port, require_tool, wait_until

HOSTILE = '<img src=x onerror="document.title=\'pwned\'">'


def start_collector(service: Any, data_dir: Path) -> tuple[int, int]:
    forward_port, http_port = free_port(), free_port()
    proc = service("patterns.sidecar.collector", {
        "COLLECTOR_FORWARD_HOST": "127.0.0.1",
        "COLLECTOR_FORWARD_PORT": str(forward_port),
        "COLLECTOR_HTTP_HOST": "127.0.0.1",
        "COLLECTOR_HTTP_PORT": str(http_port),
        "COLLECTOR_DATA_DIR": str(data_dir),
        "COLLECTOR_FSYNC": "false",
    })
    wait_until(lambda: '"collector ready"' in proc.output() or not proc.alive(),
               what="collector ready")
    assert proc.alive(), proc.output()
    return forward_port, http_port


def browse(chromium: str, url: str, profile: Path) -> tuple[str, str]:
    """The page's DOM after its script ran for a few (virtual) seconds, and the browser's
    log, where a policy violation shows as a console message."""
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def test_the_live_page_runs_under_its_policy_and_shows_records_as_text(service, tmp_path):
    chromium = require_tool("chromium", "apt-get install chromium (headless browser)")
    forward_port, http_port = start_collector(service, tmp_path / "data")
    now = time.time()
    entries = b"".join(
        msgpack.packb([EventTime(now), {"log": line, "file": "/var/log/app/access.log"}],
                      use_bin_type=True)
        for line in ("first line", "second line", HOSTILE)
    )
    with ForwardClient("127.0.0.1", forward_port, self_hostname="test") as client:
        client.send_packed("app.web", entries, 3)

    url = f"http://127.0.0.1:{http_port}/"
    page = requests.get(url, timeout=5)
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "script-src 'sha256-" in policy and "style-src 'sha256-" in policy
    assert "connect-src 'self'" in policy and "unsafe-inline" not in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    api = requests.get(url + "api/records?limit=5", timeout=5)
    assert api.headers["Cache-Control"] == "no-store"
    assert api.headers["X-Content-Type-Options"] == "nosniff"

    dom, browser_log = browse(chromium, url, tmp_path / "chromium-profile")
    assert "Content Security Policy" not in browser_log, browser_log
    assert '<span id="status" class="ok">live · updated' in dom, dom
    assert '<div class="big" id="total">3</div>' in dom
    assert ">first line<" in dom and ">second line<" in dom
    # The hostile record is text on the page, never markup.
    assert html.escape(HOSTILE, quote=False) in dom
    assert "<img" not in dom and "<title>log-collector · live</title>" in dom
