"""The notes app through db-ambassador, with real PostgreSQL: its DATABASE_URL names only
localhost, it keeps serving across a failover, and it shows database errors plainly."""

from __future__ import annotations

import psycopg
import pytest
import requests

from patterns.ambassador.notes_app.db import DatabaseUnavailable, Notes
from tests.conftest import free_port, http_ok, wait_until
from tests.process.test_ambassador import (  # noqa: F401 (fixtures)
    PASSWORD,
    ambassador,
    pki,
    primary,
    workdir,
)
from tests.process.test_ambassador_failover import pair  # noqa: F401 (fixture)

APP = "patterns.ambassador.notes_app"


def start_app(service, ambassador_port: int) -> str:
    port = free_port()
    service(
        APP,
        {
            "NOTES_APP_HOST": "127.0.0.1",
            "NOTES_APP_PORT": str(port),
            "DATABASE_URL": f"postgresql://postgres@localhost:{ambassador_port}/postgres",
            "PGPASSWORD": PASSWORD,
            "NOTES_APP_DB_TIMEOUT": "3",
        },
    )
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(base + "/healthz"), timeout=20, what="notes-app up")
    return base


def test_notes_survive_a_failover(service, ambassador, pair):  # noqa: F811
    primary, standby = pair  # noqa: F811 (the pair's, not the primary fixture)
    amb = ambassador(
        [primary.port, standby.port],
        AMBASSADOR_HEALTH_POLL_SECONDS="0.5",
        AMBASSADOR_HEALTH_USER="postgres",
        AMBASSADOR_HEALTH_PASSWORD=PASSWORD,
    )
    base = start_app(service, amb.port)
    wait_until(lambda: http_ok(base + "/readyz"), timeout=20, what="notes-app ready")
    created = requests.post(base + "/notes", json={"body": "written to the primary"}, timeout=10)
    assert created.status_code == 201, created.text
    served = requests.get(base + "/db", timeout=10).json()
    assert served["server"] == "primary"
    assert served["in_recovery"] is False
    assert served["database_url_host"] == "localhost"

    primary.stop("fast")
    standby.promote()

    # The pool's connections to the old primary are dead; the app replaces them (one
    # retry) and carries on against the promoted standby, with no config change.
    def writes_again() -> bool:
        reply = requests.post(base + "/notes", json={"body": "after failover"}, timeout=10)
        return reply.status_code == 201

    wait_until(writes_again, timeout=10, interval=0.2, what="writes after failover")
    assert requests.get(base + "/db", timeout=10).json()["server"] == "standby"
    bodies = [n["body"] for n in requests.get(base + "/notes", timeout=10).json()["notes"]]
    assert "written to the primary" in bodies
    assert "after failover" in bodies
    page = requests.get(base + "/", headers={"Accept": "text/html"}, timeout=10)
    assert "after failover" in page.text


def test_database_errors_are_shown_plainly(service, ambassador):  # noqa: F811
    amb = ambassador([free_port()])  # an upstream where nothing listens
    base = start_app(service, amb.port)
    reply = requests.get(base + "/notes", timeout=20)
    assert reply.status_code == 503
    detail = reply.json()["detail"]
    assert "db-ambassador: no healthy upstream" in detail
    assert "SQLSTATE 08006" in detail
    assert requests.get(base + "/readyz", timeout=20).status_code == 503
    assert http_ok(base + "/healthz")
    bad = requests.post(base + "/notes", json={"body": ""}, timeout=10)
    assert bad.status_code == 400


def test_a_terminated_backend_costs_the_app_no_failed_request(service, ambassador, primary):  # noqa: F811
    # The server ended the app's connections (an administrator, a restart of the backend,
    # the ambassador closing a failed upstream's sessions): the very next request works.
    amb = ambassador([primary.port])
    base = start_app(service, amb.port)
    wait_until(lambda: http_ok(base + "/readyz"), timeout=20, what="notes-app ready")
    first = requests.post(base + "/notes", json={"body": "before"}, timeout=10)
    assert first.status_code == 201, first.text
    with psycopg.connect(primary.dsn(), autocommit=True) as admin:
        pids = [row[0] for row in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'notes-app'")]  # fmt: skip
        assert pids, "the app holds no connection"
        for pid in pids:  # waits up to 5 s for each backend to be gone
            assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()[0]
    reply = requests.post(base + "/notes", json={"body": "after"}, timeout=10)  # no retry loop
    assert reply.status_code == 201, reply.text
    bodies = [n["body"] for n in requests.get(base + "/notes", timeout=10).json()["notes"]]
    assert bodies.count("after") == 1


def test_a_connection_lost_during_commit_is_not_retried_so_no_note_is_stored_twice(
    primary, monkeypatch  # noqa: F811
):
    # The one case where a retry is not safe: COMMIT reached the server, the reply did
    # not come back. The app must say so rather than insert the note a second time.
    notes = Notes(primary.dsn(), pool_size=2, timeout=5)
    notes.open()
    try:
        notes.list()  # the schema, and a pooled connection
        real_commit = psycopg.Connection.commit

        def commit_then_lose_the_reply(conn: psycopg.Connection) -> None:
            real_commit(conn)  # the server has committed...
            monkeypatch.setattr(psycopg.Connection, "commit", real_commit)  # (just once)
            with psycopg.connect(primary.dsn(), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s, 5000)", (conn.info.backend_pid,))
            conn.execute("SELECT 1")  # ...and the client finds its connection broken

        monkeypatch.setattr(psycopg.Connection, "commit", commit_then_lose_the_reply)
        with pytest.raises(DatabaseUnavailable, match="may or may not have been stored"):
            notes.add("exactly once")
        assert [n["body"] for n in notes.list()].count("exactly once") == 1
    finally:
        notes.close()
