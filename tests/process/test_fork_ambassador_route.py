"""The ambassador guide's "Fork it: a routing rule of your own" section, done as it says: a
copy of `patterns/` gets the section's new file (tests/unit/fork_ambassador_route/
read_only.py, which the section shows verbatim, see tests/unit/test_fork_ambassador_route.py)
and its one registration line, and the db-ambassador run from that copy with
AMBASSADOR_ROUTE=read-only, in front of a real primary and its standby, sends a session
marked read-only to the standby, every other one to the primary, and the marked one to the
primary too once the standby is down."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from tests import pg
from tests.conftest import free_port, http_ok, wait_until
from tests.fork import fork_patterns, register
from tests.process.test_ambassador import PASSWORD, listening
from tests.process.test_ambassador_failover import pair  # noqa: F401 (fixture)
from tests.unit.test_fork_ambassador_route import EXAMPLE, NEW_FILE, REGISTRATION, REGISTRY


def fork_with_the_rule(tmp_path: Path) -> Path:
    fork = fork_patterns(tmp_path / "fork")
    # Step 1: the new file.
    shutil.copyfile(EXAMPLE, fork / NEW_FILE)
    # Step 2: its line in ROUTES.
    register(fork / REGISTRY, "ROUTES: dict[str, str] = {\n", REGISTRATION)
    return fork


@pytest.fixture
def forked_ambassador(tmp_path: Path, pair) -> Iterator[tuple[str, str, pg.Cluster, pg.Cluster]]:  # noqa: F811
    """Step 3: the copy's db-ambassador with AMBASSADOR_ROUTE=read-only and health
    credentials (roles are known only with them), in front of the primary and the standby;
    yields (dsn without application_name, admin URL, primary, standby)."""
    primary, standby = pair
    fork = fork_with_the_rule(tmp_path)
    port, admin_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "AMBASSADOR_ROUTE": "read-only",
        "AMBASSADOR_UPSTREAMS": f"127.0.0.1:{primary.port},127.0.0.1:{standby.port}",
        "AMBASSADOR_HEALTH_USER": pg.SUPERUSER,
        "AMBASSADOR_HEALTH_PASSWORD": PASSWORD,
        "AMBASSADOR_HEALTH_POLL_SECONDS": "0.3",
        "AMBASSADOR_HEALTH_TIMEOUT": "2",
        "AMBASSADOR_LISTEN": f"127.0.0.1:{port}",
        "AMBASSADOR_HTTP_HOST": "127.0.0.1",
        "AMBASSADOR_HTTP_PORT": str(admin_port),
        "AMBASSADOR_EVENT_LOOP": "asyncio",
    }
    log = tmp_path / "ambassador.log"
    with open(log, "wb") as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "patterns.ambassador.db_ambassador"],
            cwd=fork,  # the copy's patterns/ comes first on sys.path
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    admin = f"http://127.0.0.1:{admin_port}"
    try:
        up = lambda: http_ok(admin + "/healthz") and listening(port)  # noqa: E731
        wait_until(lambda: up() or proc.poll() is not None, timeout=20,
                   what="the forked ambassador listening")  # fmt: skip
        assert proc.poll() is None, log.read_text()
        dsn = (f"host=127.0.0.1 port={port} user={pg.SUPERUSER} password={PASSWORD}"
               " dbname=postgres connect_timeout=10")  # fmt: skip
        yield dsn, admin, primary, standby
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def roles(admin: str) -> dict[str, tuple[bool, str]]:
    view = requests.get(admin + "/upstreams", timeout=2).json()
    return {u["upstream"]: (u["healthy"], u["role"]) for u in view["upstreams"]}


def served_by(dsn: str, application_name: str) -> tuple[int, bool]:
    with psycopg.connect(dsn, application_name=application_name) as conn:
        port, in_recovery = conn.execute(
            "SELECT current_setting('port')::int, pg_is_in_recovery()"
        ).fetchone()
    return port, in_recovery


def test_a_read_only_session_goes_to_the_standby_and_the_others_to_the_primary(
    forked_ambassador,
):
    dsn, admin, primary, standby = forked_ambassador
    both_known = {f"127.0.0.1:{primary.port}": (True, "primary"),
                  f"127.0.0.1:{standby.port}": (True, "standby")}  # fmt: skip
    wait_until(lambda: roles(admin) == both_known, what="both roles known")
    assert served_by(dsn, "notes") == (primary.port, False)
    assert served_by(dsn, "reports-readonly") == (standby.port, True)
    assert served_by(dsn, "readonly-reports") == (primary.port, False)  # a suffix, not a word

    # No healthy standby: a read-only session is served by the primary.
    standby.stop("immediate")
    wait_until(lambda: roles(admin)[f"127.0.0.1:{standby.port}"][0] is False,
               what="the standby seen down")  # fmt: skip
    assert served_by(dsn, "reports-readonly") == (primary.port, False)
