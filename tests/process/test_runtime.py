"""The shared runtime as a real process: config errors, probes, metrics, signals."""

import signal
import subprocess
import sys
import time

import requests

from tests.conftest import ROOT, free_port, http_ok, wait_until

MODULE = "tests.process.runtime_sample"


def test_bad_configuration_stops_at_start_naming_the_variable():
    result = subprocess.run(
        [sys.executable, "-m", MODULE],
        env={"SAMPLE_HTTP_PORT": "http", "SAMPLE_READY": "maybe", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, cwd=ROOT, timeout=30,
    )
    assert result.returncode == 2
    assert "SAMPLE_HTTP_PORT='http': expected an integer" in result.stderr
    assert "SAMPLE_READY='maybe': expected true or false" in result.stderr


def test_a_bad_log_level_is_a_configuration_error_not_a_traceback():
    result = subprocess.run(
        [sys.executable, "-m", MODULE],
        env={"LOG_LEVEL": "bogus", "SAMPLE_READY": "maybe", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, cwd=ROOT, timeout=30,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert (
        "LOG_LEVEL='bogus': expected debug, info, warning, error or critical" in result.stderr
    )
    assert "SAMPLE_READY='maybe'" in result.stderr  # reported together with the others


def test_log_level_sets_what_is_logged(service):
    port = free_port()
    proc = service(MODULE, {"SAMPLE_HTTP_PORT": str(port), "LOG_LEVEL": "WARNING"})
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), what="liveness")
    assert proc.stop() == 0
    assert '"started"' not in proc.output()  # info lines are below the level


def test_probes_metrics_and_json_logs(service):
    port = free_port()
    proc = service(MODULE, {"SAMPLE_HTTP_PORT": str(port), "SAMPLE_READY": "false"})
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{base}/healthz"), what="liveness")
    ready = requests.get(f"{base}/readyz", timeout=2)
    assert ready.status_code == 503 and "sample not ready" in ready.text
    metrics = requests.get(f"{base}/metrics", timeout=2)
    assert metrics.headers["Content-Type"].startswith("text/plain")
    assert "process_resident_memory_bytes" in metrics.text
    assert 'service_info{service="runtime-sample"} 1.0' in metrics.text
    assert requests.get(f"{base}/nope", timeout=2).status_code == 404
    assert proc.stop() == 0
    first_line = proc.output().splitlines()[0]
    assert '"service": "runtime-sample"' in first_line and '"level": "info"' in first_line


def test_sigterm_exits_zero_and_a_second_signal_exits_at_once(service):
    port = free_port()
    graceful = service(MODULE, {"SAMPLE_HTTP_PORT": str(port)})
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), what="liveness")
    assert graceful.stop(timeout=10) == 0

    port = free_port()
    slow = service(MODULE, {"SAMPLE_HTTP_PORT": str(port), "SAMPLE_LINGER": "60"})
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), what="liveness")
    slow.signal(signal.SIGTERM)
    # Handled (not merely delivered): two signals before the handler runs count as one.
    wait_until(lambda: '"message": "shutting down"' in slow.output(),
               what="the first SIGTERM handled")
    assert slow.alive(), "the first SIGTERM starts a graceful shutdown, it does not kill"
    started = time.monotonic()
    slow.signal(signal.SIGTERM)
    assert slow.wait(timeout=10) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 5


def test_no_probe_passes_before_the_service_has_registered_its_checks(service):
    """The admin port answers from the start, but /healthz and /readyz say "starting"
    until the service's checks are in place: a probe in that moment must not pass (a
    native sidecar's startupProbe would release the app too early)."""
    port = free_port()
    proc = service(MODULE, {"SAMPLE_HTTP_PORT": str(port), "SAMPLE_SETUP_SECONDS": "3"})
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(base + "/metrics"), what="admin port up")
    for path in ("/healthz", "/readyz"):
        response = requests.get(base + path, timeout=2)
        assert response.status_code == 503
        assert response.text == "starting: checks not registered yet\n"
    wait_until(lambda: http_ok(base + "/readyz"), timeout=15, what="checks registered")
    assert requests.get(base + "/healthz", timeout=2).status_code == 200
    assert proc.stop() == 0
