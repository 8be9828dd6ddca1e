"""The notes table behind a psycopg connection pool, with the one retry the app allows
itself: a connection that broke (its server died, the ambassador failed over) is replaced
and the statement tried once more on a fresh one. That is safe because a transaction whose
connection breaks before COMMIT is rolled back by the server; a break during COMMIT itself
is not retried (the server may have committed: a retry could store a note twice). Any other
database error is raised as is, for the page to show plainly."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    id bigserial PRIMARY KEY,
    body text NOT NULL CHECK (length(body) BETWEEN 1 AND 2000),
    created_at timestamptz NOT NULL DEFAULT now()
)
"""


class DatabaseUnavailable(Exception):
    """No connection could be had; the text is the server's (or ambassador's) own."""


class CommitOutcomeUnknown(DatabaseUnavailable):
    """The connection broke during COMMIT: the change may or may not be stored."""


class Notes:
    def __init__(self, database_url: str, pool_size: int, timeout: float) -> None:
        self.database_url = database_url
        self.timeout = timeout
        self.pool = ConnectionPool(
            database_url,
            min_size=1,
            max_size=pool_size,
            timeout=timeout,
            # A cheap check on checkout weeds out connections the failover killed.
            check=ConnectionPool.check_connection,
            kwargs={"connect_timeout": max(1, int(timeout)), "application_name": "notes-app"},
            open=False,
            name="notes",
        )
        self._schema_ready = False

    def open(self) -> None:
        self.pool.open(wait=False)

    def close(self) -> None:
        self.pool.close()

    def _run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        for attempt in (1, 2):
            conn: psycopg.Connection[Any] | None = None
            try:
                with self.pool.connection() as conn:
                    if not self._schema_ready:
                        self._create_schema(conn)
                    return work(conn)
            except PoolTimeout as exc:
                raise DatabaseUnavailable(self._why_no_connection(exc)) from exc
            except psycopg.OperationalError as exc:
                if attempt == 2 or conn is None or not (conn.broken or conn.closed):
                    raise
                log.warning("database connection broke; retrying once", extra={"error": str(exc)})
        raise AssertionError("unreachable")

    def _create_schema(self, conn: psycopg.Connection[Any]) -> None:
        try:
            conn.execute(SCHEMA)
            conn.commit()
            self._schema_ready = True
        except psycopg.errors.ReadOnlySqlTransaction:
            conn.rollback()  # on a standby: reads still work, the next primary creates it

    def _why_no_connection(self, exc: PoolTimeout) -> str:
        """The pool only says it timed out; one direct attempt tells the user why."""
        try:
            psycopg.connect(self.database_url, connect_timeout=max(1, int(self.timeout))).close()
        except psycopg.Error as direct:
            return str(direct).strip()
        return str(exc)

    def list(self, limit: int = 100) -> list[dict[str, Any]]:
        def work(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(
                    "SELECT id, body, created_at FROM notes ORDER BY id DESC LIMIT %s", (limit,)
                )
                return cur.fetchall()

        return self._run(work)

    def add(self, body: str) -> dict[str, Any]:
        def work(conn: psycopg.Connection[Any]) -> dict[str, Any]:
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(
                    "INSERT INTO notes (body) VALUES (%s) RETURNING id, body, created_at", (body,)
                )
                row = cur.fetchone()
            try:
                conn.commit()
            except psycopg.OperationalError as exc:
                raise CommitOutcomeUnknown(
                    "the connection broke during COMMIT: the note may or may not have been "
                    f"stored (not retried, so it is not stored twice): {str(exc).strip()}"
                ) from exc
            assert row is not None
            return row

        return self._run(work)

    def server(self) -> dict[str, Any]:
        """Which server answered: what the failover demo watches change."""

        def work(conn: psycopg.Connection[Any]) -> dict[str, Any]:
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(
                    "SELECT current_setting('cluster_name') AS server,"
                    " pg_is_in_recovery() AS in_recovery,"
                    " inet_server_port() AS server_port"
                )
                row = cur.fetchone()
            conn.rollback()
            assert row is not None
            return {**row, "database_url_host": conn.info.host, "database_url_port": conn.info.port}

        return self._run(work)
