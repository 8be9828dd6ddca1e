"""Failover through db-ambassador with a real primary and a streaming standby."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from tests import pg
from tests.conftest import free_port, wait_until
from tests.process.test_ambassador import (  # noqa: F401 (fixture)
    PASSWORD,
    ambassador,
    cancel_running_sleep,
)

HEALTH_INTERVAL = 0.5


def _pair(tls: bool) -> Iterator[tuple[pg.Cluster, pg.Cluster, pg.Pki | None]]:
    problem = pg.missing_prerequisite()
    if problem:
        pytest.skip(problem)
    workdir = pg.make_workdir()
    pki = pg.make_pki(workdir / "pki", ["localhost", "127.0.0.1"]) if tls else None
    primary = pg.Cluster(workdir, "primary", free_port(), PASSWORD)
    standby = pg.Cluster(workdir, "standby", free_port(), PASSWORD)
    try:
        primary.init(pki).start()
        with psycopg.connect(primary.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id serial PRIMARY KEY, body text)")
            conn.execute("INSERT INTO items (body) VALUES ('before failover')")
        standby.init_standby_of(primary, pki).start()
        yield primary, standby, pki
    finally:
        primary.stop("immediate")
        standby.stop("immediate")
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def pair() -> Iterator[tuple[pg.Cluster, pg.Cluster]]:
    """A fresh primary and its hot standby (each test stops and promotes them)."""
    for primary, standby, _ in _pair(tls=False):
        yield primary, standby


@pytest.fixture
def tls_pair() -> Iterator[tuple[pg.Cluster, pg.Cluster, pg.Pki]]:
    """The same, TLS on, and the CA that signed their certificate (127.0.0.1, localhost)."""
    for primary, standby, pki in _pair(tls=True):
        assert pki is not None
        yield primary, standby, pki


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            # Field 4 of /proc/<pid>/stat is the parent's pid (after the "(comm)" field).
            if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@contextlib.contextmanager
def frozen(cluster: pg.Cluster, backends: bool) -> Iterator[None]:
    """SIGSTOP the server's postmaster (and with `backends`, every process it forked): the
    kernel still completes TCP handshakes on its listening socket, nothing answers, like a
    hung host or a network black hole. SIGCONT on the way out, whatever happened."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    stopped = [postmaster]
    try:
        os.kill(postmaster, signal.SIGSTOP)
        if backends:  # listed after the postmaster stopped: it forks no new ones
            for pid in _children(postmaster):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
        yield
    finally:
        for pid in reversed(stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def view_once(amb, condition, what: str, timeout: float = 10.0) -> dict:
    """The ambassador's /upstreams view once `condition(view)` holds: what a test asserts
    next comes from that one snapshot, not from a later one."""
    return wait_until(lambda: view if condition(view := amb.json("/upstreams")) else None,
                      timeout=timeout, what=what)  # fmt: skip


def served_by(dsn: str) -> tuple[int, bool]:
    with psycopg.connect(dsn) as conn:
        port, in_recovery = conn.execute(
            "SELECT current_setting('port')::int, pg_is_in_recovery()"
        ).fetchone()
    return port, in_recovery


def test_primary_stopped_new_sessions_go_to_the_other_upstream(ambassador, pair):  # noqa: F811
    primary, standby = pair
    amb = ambassador([primary.port, standby.port],
                     AMBASSADOR_HEALTH_POLL_SECONDS=str(HEALTH_INTERVAL))
    assert served_by(amb.dsn()) == (primary.port, False)
    open_session = psycopg.connect(amb.dsn())
    open_session.execute("SELECT 1")
    open_session.commit()

    primary.stop("immediate")
    stopped = time.monotonic()
    # Within one health-check interval (plus the check itself) new sessions succeed on
    # the standby, which still serves reads.
    wait_until(lambda: _works(amb.dsn()), timeout=HEALTH_INTERVAL + 3, interval=0.05,
               what="a session on the standby")  # fmt: skip
    assert time.monotonic() - stopped < HEALTH_INTERVAL + 2.5
    assert served_by(amb.dsn()) == (standby.port, True)
    # The session on the dead primary got an error, it did not hang.
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        open_session.execute("SELECT 1")
    assert time.monotonic() - started < 2
    open_session.close()
    # New sessions never waited for the health check (a refused connect falls through
    # to the next upstream); the check then records the failover.
    wait_until(lambda: amb.metric("ambassador_failovers_total") == 1, timeout=HEALTH_INTERVAL + 3,
               what="failover counted")  # fmt: skip
    assert amb.json("/upstreams")["active_upstream"] == f"127.0.0.1:{standby.port}"


def _works(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn) as conn:
            conn.execute("SELECT body FROM items").fetchall()
        return True
    except psycopg.OperationalError:
        return False


def test_with_health_credentials_the_promoted_standby_becomes_the_primary(ambassador, pair):  # noqa: F811
    primary, standby = pair
    # The standby is listed FIRST: only the role check keeps writes on the real primary.
    amb = ambassador(
        [standby.port, primary.port],
        AMBASSADOR_HEALTH_POLL_SECONDS=str(HEALTH_INTERVAL),
        AMBASSADOR_HEALTH_USER="postgres",
        AMBASSADOR_HEALTH_PASSWORD=PASSWORD,
    )
    expected = {f"127.0.0.1:{primary.port}": "primary", f"127.0.0.1:{standby.port}": "standby"}
    # Each upstream's role comes from its own check: wait for both, not for the first.
    view = view_once(amb, lambda v: {u["upstream"]: u["role"] for u in v["upstreams"]} == expected,
                     "both roles known")  # fmt: skip
    assert view["active_upstream"] == f"127.0.0.1:{primary.port}"
    assert served_by(amb.dsn()) == (primary.port, False)

    primary.stop("fast")
    standby.promote()
    wait_until(lambda: served_by(amb.dsn()) == (standby.port, False),
               timeout=HEALTH_INTERVAL + 5, what="the promoted standby as primary")  # fmt: skip
    with psycopg.connect(amb.dsn()) as conn:
        conn.execute("INSERT INTO items (body) VALUES ('after failover')")
        conn.commit()
        bodies = [r[0] for r in conn.execute("SELECT body FROM items ORDER BY id")]
    assert bodies == ["before failover", "after failover"]
    # The promoted standby's role comes from its next check, not from the session above.
    view = view_once(amb, lambda v: v["active_upstream"] == f"127.0.0.1:{standby.port}"
                     and v["upstreams"][0]["role"] == "primary", "admin view updated",
                     timeout=HEALTH_INTERVAL + 5)  # fmt: skip
    states = {u["upstream"]: u for u in view["upstreams"]}
    assert states[f"127.0.0.1:{standby.port}"]["role"] == "primary"
    assert states[f"127.0.0.1:{primary.port}"]["healthy"] is False
    assert amb.metric("ambassador_failovers_total") >= 1


def test_a_stalled_server_is_tolerated_for_a_few_timeouts_then_marked_down(ambassador, pair):  # noqa: F811
    primary, _standby = pair
    common = {"AMBASSADOR_HEALTH_POLL_SECONDS": "0.2", "AMBASSADOR_HEALTH_TIMEOUT": "0.2"}
    patient = ambassador([primary.port], AMBASSADOR_HEALTH_TIMEOUTS="100", **common)
    strict = ambassador([primary.port], AMBASSADOR_HEALTH_TIMEOUTS="2", **common)
    for amb in (patient, strict):
        wait_until(lambda amb=amb: amb.json("/upstreams")["upstreams"][0]["healthy"], what="up")
    with frozen(primary, backends=False):  # accepts connections (kernel backlog), answers none
        down = view_once(strict, lambda v: not v["upstreams"][0]["healthy"],
                         "strict ambassador marks it down", timeout=5)["upstreams"][0]  # fmt: skip
        assert down["last_error"] == "timed out"
        assert down["consecutive_failures"] >= 2  # not at the first timeout
        # The same stall, seen by an ambassador that tolerates timeouts. Each ambassador's
        # checks run on their own clock: wait for this one to have seen more timeouts than
        # made the other give up, and find it still healthy.
        tolerated = view_once(
            patient, lambda v: v["upstreams"][0]["consecutive_failures"] >= 3,
            "patient ambassador sees 3 timeouts", timeout=5,
        )["upstreams"][0]  # fmt: skip
        assert tolerated["healthy"] is True
        assert tolerated["last_error"] == "timed out"
    wait_until(lambda: strict.json("/upstreams")["upstreams"][0]["healthy"], what="back up")


def test_the_open_sessions_of_a_hung_server_are_closed_not_left_hanging(ambassador, pair):  # noqa: F811
    # A server that hangs sends no FIN and no RST: without the ambassador, a client would
    # wait on its socket until TCP gives up (minutes). The health checks find the hang
    # (2 timeouts of 0.2 s here) and the ambassador closes the sessions of that upstream.
    primary, _standby = pair
    amb = ambassador([primary.port], AMBASSADOR_HEALTH_POLL_SECONDS="0.2",
                     AMBASSADOR_HEALTH_TIMEOUT="0.2", AMBASSADOR_HEALTH_TIMEOUTS="2")  # fmt: skip
    conn = psycopg.connect(amb.dsn())
    conn.execute("SELECT 1")
    conn.commit()
    killed = f'ambassador_sessions_killed_total{{upstream="127.0.0.1:{primary.port}"}}'
    assert amb.metric(killed) == 0
    # The executor outlives the freeze: if the query hangs, SIGCONT comes first and frees it.
    with ThreadPoolExecutor(1) as pool, frozen(primary, backends=True):
        started = time.monotonic()
        query = pool.submit(conn.execute, "SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            query.result(timeout=5)
        assert time.monotonic() - started < 2.5  # a few health rounds, not a TCP timeout
        assert amb.metric(killed) == 1
        assert not amb.json("/upstreams")["upstreams"][0]["healthy"]
    conn.close()


def test_a_silent_primary_costs_a_new_session_only_its_share_of_the_connect_timeout(
    ambassador, tls_pair  # noqa: F811
):
    # The primary hangs (SIGSTOP): the kernel completes the TCP handshake, the TLS
    # negotiation gets no answer. The health checks are slowed down so they cannot notice
    # during the test: only the connect path can take the client elsewhere, and it must do
    # so within AMBASSADOR_CONNECT_TIMEOUT (each of the two upstreams gets half of it).
    primary, standby, pki = tls_pair
    amb = ambassador(
        [primary.port, standby.port],
        AMBASSADOR_TLS_MODE="verify-full", AMBASSADOR_TLS_CA_FILE=str(pki.ca_cert),
        AMBASSADOR_HEALTH_POLL_SECONDS="600", AMBASSADOR_CONNECT_TIMEOUT="4",
    )  # fmt: skip
    assert served_by(amb.dsn()) == (primary.port, False)
    with frozen(primary, backends=False):
        started = time.monotonic()
        assert served_by(amb.dsn()) == (standby.port, True)
        assert time.monotonic() - started < 3.5  # 2 s waited on the primary, then the standby
        # Not the health checks' doing: they still have the primary as healthy.
        assert amb.json("/upstreams")["upstreams"][0]["healthy"] is True
        with frozen(standby, backends=False):  # both silent: a clear error, in time
            started = time.monotonic()
            with pytest.raises(psycopg.OperationalError) as failure:
                served_by(amb.dsn())
            assert time.monotonic() - started < 5
    assert "SQLSTATE 08006" in str(failure.value)
    assert "AMBASSADOR_CONNECT_TIMEOUT=4s" in str(failure.value)
    for server in (primary, standby):
        assert f"127.0.0.1:{server.port}: no answer within" in str(failure.value)


def test_a_cancel_reaches_a_session_on_the_standby_once_the_primary_is_back(ambassador, pair):  # noqa: F811
    # A session opened during the primary's outage lives on the standby; the primary comes
    # back and takes the new sessions again. A cancel for the old session must still reach
    # the standby, not the upstream new sessions go to.
    primary, standby = pair
    amb = ambassador([primary.port, standby.port],
                     AMBASSADOR_HEALTH_POLL_SECONDS=str(HEALTH_INTERVAL))
    primary.stop("fast")
    conn = psycopg.connect(amb.dsn())  # the refused primary falls through to the standby
    try:
        port = conn.execute("SELECT current_setting('port')::int").fetchone()[0]
        assert port == standby.port
        conn.rollback()
        primary.start()
        wait_until(lambda: served_by(amb.dsn())[0] == primary.port, timeout=HEALTH_INTERVAL + 5,
                   what="new sessions back on the primary")  # fmt: skip
        cancel_running_sleep(conn, standby)
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session carries on
    finally:
        conn.close()
    assert amb.metric('ambassador_cancel_requests_total{result="forwarded"}') == 1
    # Only the standby got it: the ambassador knows which server issued the session's key.
    assert "in cancel request did not match any process" not in primary.server_log()
    assert "cancel request not delivered" not in amb.proc.output()
