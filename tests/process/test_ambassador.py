"""db-ambassador against real PostgreSQL 15 servers started by the tests: round trips,
TLS verify-full, the connection limit, no upstream at all, SIGTERM with an open
transaction, and many idle clients. Failover is in test_ambassador_failover.py."""

from __future__ import annotations

import os
import resource
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from patterns.ambassador.db_ambassador import pgwire
from patterns.ambassador.db_ambassador.pgwire import parse_error_fields
from tests import pg
from tests.conftest import free_port, http_ok, wait_until

MODULE = "patterns.ambassador.db_ambassador"
PASSWORD = "s3cret-test"
TRUSTED = "trusted"  # pg_hba.conf: trust, so a hand-made client needs no SCRAM


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    problem = pg.missing_prerequisite()
    if problem:
        pytest.skip(problem)
    path = pg.make_workdir()
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def pki(workdir: Path) -> pg.Pki:
    return pg.make_pki(workdir / "pki", ["localhost", "127.0.0.1"])


@pytest.fixture(scope="module")
def primary(workdir: Path, pki: pg.Pki) -> Iterator[pg.Cluster]:
    cluster = pg.Cluster(workdir, "primary", free_port(), PASSWORD).init(pki)
    # Health-check roles for the two older password methods (SCRAM is the default), and
    # a role that needs no authentication, for clients that speak the protocol by hand.
    pg.prepend_hba(
        cluster,
        ["host all health_md5 127.0.0.1/32 md5", "host all health_plain 127.0.0.1/32 password",
         f"host all {TRUSTED} 127.0.0.1/32 trust"],
    )  # fmt: skip
    cluster.start()
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("SET password_encryption = 'md5'")
        conn.execute(f"CREATE ROLE health_md5 LOGIN PASSWORD '{PASSWORD}'")
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(f"CREATE ROLE health_plain LOGIN PASSWORD '{PASSWORD}'")
        conn.execute(f"CREATE ROLE {TRUSTED} LOGIN")
    yield cluster
    cluster.stop()


@dataclass
class Ambassador:
    port: int
    admin: str
    proc: Any

    def dsn(self, **extra: str) -> str:
        params = {
            "host": "127.0.0.1", "port": str(self.port), "user": "postgres",
            "password": PASSWORD, "dbname": "postgres", "connect_timeout": "10", **extra,
        }  # fmt: skip
        return " ".join(f"{k}={v}" for k, v in params.items())

    def json(self, path: str) -> Any:
        return requests.get(self.admin + path, timeout=2).json()

    def metric(self, sample: str) -> float:
        """The value of one sample, e.g. 'ambassador_refusals_total{reason="x"}'."""
        for line in requests.get(self.admin + "/metrics", timeout=2).text.splitlines():
            key, _, value = line.rpartition(" ")
            if key == sample:
                return float(value)
        return 0.0


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def raw_refusal(port: int) -> dict[str, str]:
    """Speak the protocol by hand: SSLRequest, startup, and read the ErrorResponse's
    fields ({'C': sqlstate, 'M': message, ...})."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(struct.pack("!II", 8, 80877103))
        assert sock.recv(1) == b"N"
        params = b"user\0postgres\0database\0postgres\0\0"
        sock.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data[:1] == b"E", data
    return parse_error_fields(data[5:])


@pytest.fixture
def ambassador(service):
    def start(upstreams: list[int | str], wait: bool = True, **env: str) -> Ambassador:
        """Upstreams: ports on 127.0.0.1, or "host:port"; `wait`: until it listens."""
        port, admin_port = free_port(), free_port()
        proc = service(
            MODULE,
            {
                "AMBASSADOR_LISTEN": f"127.0.0.1:{port}",
                "AMBASSADOR_UPSTREAMS": ",".join(
                    u if isinstance(u, str) else f"127.0.0.1:{u}" for u in upstreams
                ),
                "AMBASSADOR_HTTP_HOST": "127.0.0.1",
                "AMBASSADOR_HTTP_PORT": str(admin_port),
                "AMBASSADOR_HEALTH_POLL_SECONDS": "0.3",
                # Frequent checks, but not ones that a busy machine makes time out (the
                # default is the interval): tests about timeouts set their own.
                "AMBASSADOR_HEALTH_TIMEOUT": "2",
                **env,
            },
        )
        amb = Ambassador(port, f"http://127.0.0.1:{admin_port}", proc)
        if not wait:
            return amb
        wait_until(lambda: http_ok(amb.admin + "/healthz") or not proc.alive(),
                   what="ambassador liveness")  # fmt: skip
        wait_until(lambda: listening(port) or not proc.alive(), what="ambassador listening")
        assert proc.alive(), proc.output()
        return amb

    return start


def test_healthz_passes_only_once_the_ambassador_listens(ambassador):
    # Kubernetes starts the app once the ambassador's startupProbe (/healthz) passes: by
    # then the app's localhost:5432 must accept. The first health-check round comes before
    # the listener, and here it takes 3 s: the upstream accepts (kernel backlog), never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        amb = ambassador([silent.getsockname()[1]], wait=False, AMBASSADOR_HEALTH_TIMEOUT="3")

        def healthz() -> tuple[int, str] | None:  # (a 503 Response is falsy)
            try:
                reply = requests.get(amb.admin + "/healthz", timeout=1)
            except requests.RequestException:
                return None
            return reply.status_code, reply.text

        status, text = wait_until(healthz, what="the admin server")
        assert status == 503, text
        assert f"not listening yet on 127.0.0.1:{amb.port}" in text
        assert not listening(amb.port)
        wait_until(lambda: http_ok(amb.admin + "/healthz"), timeout=8, what="liveness")
        assert listening(amb.port)  # /healthz said ok: the port accepts
        assert amb.proc.alive()


def test_round_trip_through_the_ambassador(ambassador, primary):
    amb = ambassador([primary.port])
    wait_until(lambda: http_ok(amb.admin + "/readyz"), what="readiness")
    # psycopg's default sslmode=prefer sends an SSLRequest first: the ambassador says 'N'.
    with psycopg.connect(amb.dsn()) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, body text)")
        conn.execute("INSERT INTO notes (body) VALUES (%s)", ("through the ambassador",))
        conn.commit()
        big = conn.execute("SELECT repeat('x', 1000000)").fetchone()[0]
        assert len(big) == 1_000_000
        port = conn.execute("SELECT current_setting('port')").fetchone()[0]
        assert int(port) == primary.port
    with psycopg.connect(primary.dsn()) as direct:
        bodies = [r[0] for r in direct.execute("SELECT body FROM notes")]
    assert "through the ambassador" in bodies
    assert amb.metric(f'ambassador_sessions_total{{upstream="127.0.0.1:{primary.port}"}}') == 1
    assert amb.metric('ambassador_bytes_total{direction="upstream_to_client"}') > 1_000_000
    view = amb.json("/upstreams")
    assert view["active_upstream"] == f"127.0.0.1:{primary.port}"
    assert view["upstreams"][0]["healthy"] is True


def test_verify_full_with_the_right_ca_encrypts_upstream(ambassador, primary, pki):
    amb = ambassador(
        [primary.port], AMBASSADOR_TLS_MODE="verify-full", AMBASSADOR_TLS_CA_FILE=str(pki.ca_cert)
    )
    wait_until(lambda: http_ok(amb.admin + "/readyz"), what="readiness")
    with psycopg.connect(amb.dsn()) as conn:
        # The client's leg is plaintext on loopback; the server sees a TLS connection.
        assert conn.pgconn.ssl_in_use is False
        row = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        ssl_on, version = row.fetchone()
    assert ssl_on is True
    assert version.startswith("TLS")


def test_verify_full_with_the_wrong_ca_fails_with_a_clear_error(ambassador, primary, workdir):
    other = pg.make_pki(workdir / "other-pki", ["localhost", "127.0.0.1"], ca_name="some other CA")
    amb = ambassador(
        [primary.port], AMBASSADOR_TLS_MODE="verify-full", AMBASSADOR_TLS_CA_FILE=str(other.ca_cert)
    )
    with pytest.raises(psycopg.OperationalError) as failure:
        psycopg.connect(amb.dsn())
    assert "SQLSTATE 08006" in str(failure.value)
    assert "TLS certificate verification failed" in str(failure.value)
    assert f"127.0.0.1:{primary.port}" in str(failure.value)
    readyz = requests.get(amb.admin + "/readyz", timeout=2)
    assert readyz.status_code == 503
    assert "certificate" in readyz.text
    assert http_ok(amb.admin + "/healthz")


def test_verify_full_with_a_certificate_for_another_host_fails_with_a_clear_error(
    ambassador, workdir
):
    # The right CA signed the server's certificate, but for another name than the one the
    # ambassador reaches it by: verify-full must refuse it, and say that it is the name.
    misnamed = pg.make_pki(workdir / "misnamed-pki", ["db.example.invalid"])
    server = pg.Cluster(workdir, "misnamed", free_port(), PASSWORD).init(misnamed).start()
    try:
        amb = ambassador([f"localhost:{server.port}"], AMBASSADOR_TLS_MODE="verify-full",
                         AMBASSADOR_TLS_CA_FILE=str(misnamed.ca_cert))  # fmt: skip
        with pytest.raises(psycopg.OperationalError) as failure:
            psycopg.connect(amb.dsn())
        assert "SQLSTATE 08006" in str(failure.value)
        assert (
            f"localhost:{server.port}: TLS certificate verification failed: "
            "Hostname mismatch, certificate is not valid for 'localhost'"
        ) in str(failure.value)
        assert "Hostname mismatch" in amb.json("/upstreams")["upstreams"][0]["last_error"]
    finally:
        server.stop()


@pytest.mark.parametrize("user", ["postgres", "health_md5", "health_plain"])
def test_health_credentials_find_the_primary_with_each_password_method(ambassador, primary, user):
    # postgres: SCRAM-SHA-256 (over TLS, where the server also offers -PLUS);
    # health_md5: md5; health_plain: cleartext.
    amb = ambassador(
        [primary.port],
        AMBASSADOR_TLS_MODE="require",
        AMBASSADOR_HEALTH_USER=user,
        AMBASSADOR_HEALTH_PASSWORD=PASSWORD,
    )
    wait_until(lambda: amb.json("/upstreams")["upstreams"][0]["role"] == "primary", what="role")
    assert amb.metric(f'ambassador_upstream_primary{{upstream="127.0.0.1:{primary.port}"}}') == 1


def test_a_rejected_health_login_keeps_routing_and_says_why(ambassador, primary):
    # The server answered, in PostgreSQL: it is up. Failing it would cut every session
    # over a health-credentials mistake or a password rotation.
    amb = ambassador(
        [primary.port], AMBASSADOR_HEALTH_USER="postgres", AMBASSADOR_HEALTH_PASSWORD="wrong"
    )
    upstream = wait_until(
        lambda: view if (view := amb.json("/upstreams")["upstreams"][0])["last_error"] else None,
        what="the health login's outcome",
    )  # fmt: skip
    assert upstream["healthy"] is True
    assert upstream["role"] == "unknown"
    assert "28P01" in upstream["last_error"]  # invalid_password, from the server itself
    with psycopg.connect(amb.dsn()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert "health login rejected" in amb.proc.output()


def test_over_the_limit_the_client_sees_sqlstate_53300(ambassador, primary):
    amb = ambassador([primary.port], AMBASSADOR_MAX_CONNECTIONS="2", AMBASSADOR_CONNECT_TIMEOUT="2")
    wait_until(lambda: http_ok(amb.admin + "/readyz"), what="readiness")
    first, second = psycopg.connect(amb.dsn()), psycopg.connect(amb.dsn())
    try:
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as refused:
            psycopg.connect(amb.dsn())
        assert time.monotonic() - started < 2
        # psycopg (libpq) keeps no SQLSTATE for start-up errors: it is in the text, and
        # in the ErrorResponse's code field for drivers that read it (asyncpg, JDBC). (If
        # libpq ever keeps it, the lab guide's sentence about it must change.)
        assert refused.value.sqlstate is None
        assert "SQLSTATE 53300" in str(refused.value)
        assert raw_refusal(amb.port)["C"] == "53300"
        assert "too many connections" in str(refused.value)
        assert "AMBASSADOR_MAX_CONNECTIONS=2" in str(refused.value)
        # The admitted sessions are untouched.
        assert first.execute("SELECT 1").fetchone() == (1,)
        second.close()
        wait_until(lambda: amb.json("/upstreams")["sessions_open"] == 1, what="slot freed")
        with psycopg.connect(amb.dsn()) as again:
            assert again.execute("SELECT 2").fetchone() == (2,)
    finally:
        first.close()
        second.close()
    assert amb.metric('ambassador_refusals_total{reason="too_many_connections"}') == 2


def test_no_upstream_at_all_is_a_prompt_clear_error_and_not_ready(ambassador):
    dead = free_port()  # nothing listens there
    amb = ambassador([dead], AMBASSADOR_CONNECT_TIMEOUT="3")
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as failure:
        psycopg.connect(amb.dsn())
    assert time.monotonic() - started < 3
    assert "SQLSTATE 08006" in str(failure.value)
    assert raw_refusal(amb.port)["C"] == "08006"
    assert "no healthy upstream" in str(failure.value)
    assert f"127.0.0.1:{dead}" in str(failure.value)
    assert requests.get(amb.admin + "/readyz", timeout=2).status_code == 503
    assert http_ok(amb.admin + "/healthz")
    assert amb.metric('ambassador_refusals_total{reason="no_healthy_upstream"}') == 2


def test_sigterm_lets_an_open_transaction_finish_then_exits_0(ambassador, primary):
    amb = ambassador([primary.port], AMBASSADOR_DRAIN_TIMEOUT="20")
    wait_until(lambda: http_ok(amb.admin + "/readyz"), what="readiness")
    with psycopg.connect(primary.dsn(), autocommit=True) as direct:
        direct.execute("CREATE TABLE IF NOT EXISTS drained (v int)")
    conn = psycopg.connect(amb.dsn())
    conn.execute("INSERT INTO drained VALUES (1)")
    amb.proc.signal(signal.SIGTERM)
    # New clients are no longer accepted...
    wait_until(lambda: not listening(amb.port), timeout=5, what="listener closed")
    assert amb.proc.alive()
    assert requests.get(amb.admin + "/readyz", timeout=2).status_code == 503
    # ...while the open transaction carries on and commits.
    time.sleep(0.5)
    conn.execute("INSERT INTO drained VALUES (2)")
    conn.commit()
    conn.close()
    assert amb.proc.wait(10) == 0
    with psycopg.connect(primary.dsn()) as direct:
        assert sorted(r[0] for r in direct.execute("SELECT v FROM drained")) == [1, 2]


def test_second_sigterm_exits_at_once(ambassador, primary):
    amb = ambassador([primary.port], AMBASSADOR_DRAIN_TIMEOUT="60")
    conn = psycopg.connect(amb.dsn())
    try:
        amb.proc.signal(signal.SIGTERM)
        wait_until(lambda: not listening(amb.port), timeout=5, what="listener closed")
        amb.proc.signal(signal.SIGTERM)
        # The runtime's os._exit(128 + signal): it did not wait for the session.
        assert amb.proc.wait(5) == 128 + signal.SIGTERM
    finally:
        conn.close()


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_500_idle_clients_do_not_exhaust_fds_and_are_cleaned_up(ambassador, primary):
    # Start the ambassador with a soft fd limit of 256 (a container's default is often
    # 1024): it must raise its own limit, and drop peers that never finish a startup.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        amb = ambassador(
            [primary.port], AMBASSADOR_CONNECT_TIMEOUT="2", AMBASSADOR_IDLE_TIMEOUT="1.5"
        )
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    wait_until(lambda: http_ok(amb.admin + "/readyz"), what="readiness")
    baseline = _fd_count(amb.proc.pid)
    idle: list[socket.socket] = []
    try:
        for i in range(500):
            sock = socket.create_connection(("127.0.0.1", amb.port), timeout=5)
            if i % 2:  # half of them get as far as the SSLRequest, then go quiet
                sock.sendall(struct.pack("!II", 8, 80877103))
            idle.append(sock)
        wait_until(lambda: _fd_count(amb.proc.pid) >= baseline + 450, what="idle clients accepted")
        # A real client is still served while 500 sockets sit there.
        with psycopg.connect(amb.dsn()) as conn:
            assert conn.execute("SELECT 42").fetchone() == (42,)
        for sock in idle:
            sock.setblocking(False)
        # The startup deadline (AMBASSADOR_CONNECT_TIMEOUT) closes every silent peer.
        wait_until(
            lambda: all(_closed_by_peer(s) for s in idle), timeout=10, what="idle peers closed"
        )
        wait_until(lambda: _fd_count(amb.proc.pid) <= baseline + 2, timeout=5, what="fds released")
        assert amb.metric('ambassador_refusals_total{reason="startup_timeout"}') == 500
    finally:
        for sock in idle:
            sock.close()

    # A session that goes idle past AMBASSADOR_IDLE_TIMEOUT is closed: the client sees an
    # error on its next query (not a hang) and the server's backend goes away.
    conn = psycopg.connect(amb.dsn(application_name="idle-victim"))
    conn.execute("SELECT 1")
    conn.commit()
    with psycopg.connect(primary.dsn(), autocommit=True) as direct:
        count = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'idle-victim'"
        wait_until(lambda: direct.execute(count).fetchone()[0] == 0, timeout=8, what="backend gone")
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()


def read_to_eof(sock: socket.socket, within: float) -> bytes:
    """Everything the peer sends until it closes; fails if it has not closed by then."""
    sock.settimeout(within)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        pytest.fail(f"the connection was still open after {within}s ({len(received)} bytes)")
    return received


def messages(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split a server's byte stream into (type, body) messages."""
    out = []
    while data:
        (length,) = struct.unpack_from("!I", data, 1)
        out.append((data[:1], data[5 : 1 + length]))
        data = data[1 + length :]
    return out


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_query_then_a_half_close_gets_the_whole_reply_and_ends_the_session(
    ambassador, primary, loop
):
    # The idle timeout is off (the default): only the FIN passed on can end this session.
    amb = ambassador([primary.port], AMBASSADOR_EVENT_LOOP=loop)
    with socket.create_connection(("127.0.0.1", amb.port), timeout=5) as raw:
        # All at once, so the query and the FIN arrive while the ambassador is still
        # connecting to the server.
        startup = pgwire.startup_message({"user": TRUSTED, "database": "postgres",
                                          "application_name": "half-closer"})  # fmt: skip
        raw.sendall(startup + pgwire.query_message("SELECT repeat('x', 200000)"))
        raw.shutdown(socket.SHUT_WR)
        reply = messages(read_to_eof(raw, within=3))
    kinds = [kind for kind, _ in reply]
    assert kinds[0] == b"R" and kinds[-1] == b"Z", kinds
    rows = [pgwire.first_column(body) for kind, body in reply if kind == b"D"]
    assert rows == ["x" * 200000]  # the whole reply came back after the half-close
    assert (b"C", b"SELECT 1\0") in reply
    wait_until(lambda: amb.json("/upstreams")["sessions_open"] == 0, timeout=2,
               what="the session closed")  # fmt: skip
    with psycopg.connect(primary.dsn(), autocommit=True) as direct:
        left = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'half-closer'"
        wait_until(lambda: direct.execute(left).fetchone() == (0,), timeout=2, what="backend gone")


@pytest.mark.parametrize(
    ("loop", "tls_mode"),
    [(loop, mode) for mode in ("disable", "verify-full") for loop in ("uvloop", "asyncio")],
)
def test_a_half_close_right_after_the_startup_packet_ends_the_session(
    ambassador, primary, pki, loop, tls_mode
):
    # A half-open peer: it sends its startup packet and half-closes at once. In plaintext
    # the EOF reaches the server, which ends the session; over TLS, which cannot carry a
    # half-close, the ambassador ends it. Either way no session is left behind, with the
    # idle timeout off.
    amb = ambassador([primary.port], AMBASSADOR_EVENT_LOOP=loop, AMBASSADOR_TLS_MODE=tls_mode,
                     AMBASSADOR_TLS_CA_FILE=str(pki.ca_cert))  # fmt: skip
    with socket.create_connection(("127.0.0.1", amb.port), timeout=5) as raw:
        raw.sendall(pgwire.startup_message({"user": "postgres", "database": "postgres"}))
        raw.shutdown(socket.SHUT_WR)
        received = read_to_eof(raw, within=3)
    if tls_mode == "disable":
        assert received[:1] == b"R"  # the server's authentication request came through
    wait_until(lambda: amb.json("/upstreams")["sessions_open"] == 0, timeout=2,
               what="half-open session gone")  # fmt: skip


def cancel_running_sleep(conn: psycopg.Connection, cluster: pg.Cluster) -> None:
    """Run a long `pg_sleep` on `conn` (a session through the ambassador, served by
    `cluster`) and cancel it with libpq's cancel once the server shows it running: a cancel
    that came before would find the backend idle and be ignored. Fails unless the query
    ends in QueryCanceled; the session is then usable again."""
    backend = conn.info.backend_pid  # the server's own: BackendKeyData is relayed as is
    raised: list[BaseException] = []

    def run() -> None:
        try:
            conn.execute("SELECT pg_sleep(60)")
        except psycopg.Error as exc:
            raised.append(exc)

    query = threading.Thread(target=run, daemon=True)
    query.start()
    running = "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active'"
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as direct:
            wait_until(lambda: direct.execute(running, (backend,)).fetchone(), timeout=20,
                       what="the query running")  # fmt: skip
        conn.cancel_safe()
    finally:
        query.join(30)
    assert not query.is_alive(), "the query still runs after its cancel"
    assert len(raised) == 1 and isinstance(raised[0], psycopg.errors.QueryCanceled), raised
    conn.rollback()


def test_a_cancel_request_reaches_the_server_through_the_ambassador(ambassador, primary, pki):
    amb = ambassador(
        [primary.port], AMBASSADOR_TLS_MODE="verify-full", AMBASSADOR_TLS_CA_FILE=str(pki.ca_cert)
    )
    wait_until(lambda: http_ok(amb.admin + "/readyz"), what="readiness")
    with psycopg.connect(amb.dsn()) as conn:
        cancel_running_sleep(conn, primary)
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session carries on
    assert amb.metric('ambassador_cancel_requests_total{result="forwarded"}') == 1
    assert "cancel request not delivered" not in amb.proc.output()


def test_garbage_gets_a_protocol_error_and_a_non_postgres_upstream_is_unhealthy(ambassador):
    # An HTTP server where a database should be: it answers, but not PostgreSQL.
    with socket.socket() as fake:
        fake.bind(("127.0.0.1", 0))
        fake.listen(16)
        fake.settimeout(0.2)
        stop = threading.Event()

        def answer_http() -> None:
            while not stop.is_set():
                try:
                    peer, _ = fake.accept()
                except OSError:
                    continue
                with peer:
                    peer.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        server = threading.Thread(target=answer_http, daemon=True)
        server.start()
        try:
            amb = ambassador([fake.getsockname()[1]])
            upstream = amb.json("/upstreams")["upstreams"][0]
            assert upstream["healthy"] is False
            assert "not PostgreSQL" in upstream["last_error"]
            # A client speaking HTTP to the ambassador gets a protocol violation, cleanly.
            with socket.create_connection(("127.0.0.1", amb.port), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
            assert data[:1] == b"E"
            assert parse_error_fields(data[5:])["C"] == "08P01"
            assert amb.proc.alive()
            assert amb.metric('ambassador_refusals_total{reason="bad_startup"}') == 1
        finally:
            stop.set()
            server.join(5)
