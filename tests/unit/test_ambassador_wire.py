"""The ambassador's pure parts: wire messages, SCRAM-SHA-256, md5, the startup filter, cancel
keys and their rate, config; the upstream pool's routing and check rounds."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import struct

import pytest
from prometheus_client import CollectorRegistry

from patterns.ambassador.db_ambassador import pgwire
from patterns.ambassador.db_ambassador.cancel import CancelKeys
from patterns.ambassador.db_ambassador.config import load_config
from patterns.ambassador.db_ambassador.pool import NoUpstream, UpstreamPool
from patterns.ambassador.db_ambassador.upstream import Upstream
from patterns.common.config import ConfigError
from tests.conftest import free_port


def test_scram_sha_256_matches_the_rfc_7677_example():
    # RFC 7677, section 3: user "user", password "pencil".
    scram = pgwire.ScramSha256("pencil", user="user", client_nonce="rOprNGfwEbeRWgbNEkqO")
    assert scram.client_first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    assert scram.client_final(server_first) == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    scram.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def test_scram_rejects_a_server_that_does_not_know_the_password():
    scram = pgwire.ScramSha256("pencil", user="user", client_nonce="rOprNGfwEbeRWgbNEkqO")
    scram.client_final(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    with pytest.raises(pgwire.ProtocolError, match="signature mismatch"):
        scram.verify_server_final(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    with pytest.raises(pgwire.ProtocolError, match="nonce"):
        pgwire.ScramSha256("x", client_nonce="abc").client_final(b"r=zzz,s=AAAA,i=4096")


def test_md5_password_is_what_postgresql_expects():
    # md5(md5(password + user) + salt), as in PostgreSQL's pg_md5_encrypt.
    inner = hashlib.md5(b"secretpostgres").hexdigest().encode()
    expected = "md5" + hashlib.md5(inner + b"\x01\x02\x03\x04").hexdigest()
    assert pgwire.md5_password("postgres", "secret", b"\x01\x02\x03\x04") == expected


def test_error_response_round_trips_with_severity_code_and_message():
    message = pgwire.error_response("53300", "too many connections")
    assert message[:1] == b"E"
    (length,) = struct.unpack("!I", message[1:5])
    assert length == len(message) - 1
    fields = pgwire.parse_error_fields(message[5:])
    assert fields == {"S": "FATAL", "V": "FATAL", "C": "53300", "M": "too many connections"}


def test_startup_packet_parsing():
    packet = pgwire.startup_message({"user": "app", "database": "notes"})
    assert pgwire.startup_length(packet[:4]) == len(packet)
    assert pgwire.startup_code(packet) == pgwire.PROTOCOL_3_0
    assert pgwire.startup_params(packet) == {"user": "app", "database": "notes"}
    assert pgwire.startup_code(pgwire.ssl_request()) == pgwire.SSL_REQUEST_CODE
    with pytest.raises(pgwire.ProtocolError):
        pgwire.startup_length(struct.pack("!I", 3))
    with pytest.raises(pgwire.ProtocolError):  # e.g. a TLS ClientHello or HTTP
        pgwire.startup_length(b"GET ")


def _sasl(*names: str) -> bytes:
    body = struct.pack("!I", pgwire.AUTH_SASL) + b"".join(n.encode() + b"\0" for n in names)
    return pgwire.message(b"R", body + b"\0")


def _key_data(pid: int, secret: bytes) -> bytes:
    return pgwire.message(b"K", struct.pack("!I", pid) + secret)


AUTH_OK = pgwire.message(b"R", struct.pack("!I", pgwire.AUTH_OK))
READY = pgwire.message(b"Z", b"I")


def test_startup_filter_withdraws_channel_binding_keeps_the_key_then_steps_aside():
    before_key = pgwire.message(b"S", b"server_version\x0015\x00")
    stream = (_sasl("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256") + AUTH_OK + before_key
              + _key_data(4242, b"\x01\x02\x03\x04") + READY)  # fmt: skip
    startup = pgwire.StartupFilter(withdraw_plus=True)
    # Fed one byte at a time: messages split across reads must come out whole.
    out = b"".join(startup.feed(stream[i : i + 1]) for i in range(len(stream)))
    assert out == (_sasl("SCRAM-SHA-256") + AUTH_OK + before_key
                   + _key_data(4242, b"\x01\x02\x03\x04") + READY)  # fmt: skip
    assert startup.backend_key == struct.pack("!I", 4242) + b"\x01\x02\x03\x04"
    assert startup.done
    assert startup.feed(b"\xff raw") == b"\xff raw"


def test_startup_filter_without_tls_leaves_the_offer_alone_and_reads_a_long_key():
    # Protocol 3.2 (PostgreSQL 18) keys are up to 256 bytes; the key is kept as sent.
    stream = _sasl("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256") + AUTH_OK + _key_data(7, b"s" * 256)
    startup = pgwire.StartupFilter(withdraw_plus=False)
    assert startup.feed(stream + READY + b"after") == stream + READY + b"after"
    assert startup.backend_key == struct.pack("!I", 7) + b"s" * 256
    assert startup.done
    # The same key, presented by a CancelRequest, reads back the same.
    cancel = struct.pack("!II", 8 + 4 + 256, pgwire.CANCEL_REQUEST_CODE) + startup.backend_key
    assert pgwire.is_cancel_request(cancel)
    assert pgwire.cancel_key(cancel) == startup.backend_key


def test_startup_filter_passes_an_error_and_everything_after_it():
    error = pgwire.error_response("28P01", "password authentication failed")
    startup = pgwire.StartupFilter(withdraw_plus=True)
    assert startup.feed(error + b"rest") == error + b"rest"
    assert startup.done
    assert startup.backend_key is None


def test_startup_filter_buffers_nothing_that_is_not_postgresql():
    # A length no server sends before ReadyForQuery: relayed as is, never buffered.
    huge = b"D" + struct.pack("!I", pgwire.MAX_STARTUP_MESSAGE + 1) + b"x" * 10
    startup = pgwire.StartupFilter(withdraw_plus=False)
    assert startup.feed(AUTH_OK + huge) == AUTH_OK + huge
    assert startup.done


def test_cancel_request_lengths():
    assert pgwire.is_cancel_request(struct.pack("!IIII", 16, pgwire.CANCEL_REQUEST_CODE, 1, 2))
    assert not pgwire.is_cancel_request(struct.pack("!III", 12, pgwire.CANCEL_REQUEST_CODE, 1))
    too_long = struct.pack("!II", 8 + pgwire.MAX_CANCEL_KEY + 1, pgwire.CANCEL_REQUEST_CODE)
    assert not pgwire.is_cancel_request(too_long + b"k" * (pgwire.MAX_CANCEL_KEY + 1))


def test_cancel_keys_admit_a_known_key_within_its_sessions_rate():
    keys: CancelKeys[str] = CancelKeys(rate=2.0)
    keys.add(b"key-a", "session a", now=0.0)
    keys.add(b"key-b", "session b", now=0.0)
    assert keys.admit(b"guess", now=0.0) == (None, "unknown_key")
    # A burst of `rate` (2), then one more per half second.
    assert [keys.admit(b"key-a", now=0.0) for _ in range(3)] == [
        ("session a", ""), ("session a", ""), (None, "rate_limited")
    ]
    assert keys.admit(b"key-b", now=0.0) == ("session b", "")  # a budget of its own
    assert keys.admit(b"key-a", now=0.4) == (None, "rate_limited")
    assert keys.admit(b"key-a", now=0.5) == ("session a", "")
    assert keys.admit(b"key-a", now=100.0) == ("session a", "")  # never more than the burst
    assert keys.admit(b"key-a", now=100.0) == ("session a", "")
    assert keys.admit(b"key-a", now=100.0) == (None, "rate_limited")
    # A closed session's key is forgotten, unless another session holds it now.
    keys.add(b"key-b", "session c", now=1.0)
    keys.remove(b"key-b", "session b")
    assert keys.admit(b"key-b", now=1.0) == ("session c", "")
    keys.remove(b"key-a", "session a")
    assert keys.admit(b"key-a", now=1.0) == (None, "unknown_key")
    assert len(keys) == 1


def test_cancel_keys_below_one_a_second_still_let_one_through():
    keys: CancelKeys[str] = CancelKeys(rate=0.01)
    keys.add(b"k", "s", now=0.0)
    assert keys.admit(b"k", now=0.0) == ("s", "")
    assert keys.admit(b"k", now=99.0) == (None, "rate_limited")
    assert keys.admit(b"k", now=100.0) == ("s", "")


def test_first_column_of_a_data_row():
    row = struct.pack("!H", 1) + struct.pack("!i", 1) + b"t"
    assert pgwire.first_column(row) == "t"
    assert pgwire.first_column(struct.pack("!H", 1) + struct.pack("!i", -1)) is None


def test_config_defaults():
    config = load_config({"AMBASSADOR_UPSTREAMS": "db-primary:5432, db-standby:5432"})
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 5432)
    assert config.upstreams == (("db-primary", 5432), ("db-standby", 5432))
    assert config.admin_port == 9104
    assert config.tls_mode == "disable"
    assert config.max_connections == 100
    assert config.cancel_rate == 10
    assert config.idle_timeout == 0
    assert config.drain_timeout == 30
    assert config.health_timeouts_allowed == 3
    assert config.event_loop == "uvloop"
    assert not config.checks_role


def test_config_names_every_bad_variable():
    with pytest.raises(ConfigError) as error:
        load_config(
            {
                "AMBASSADOR_UPSTREAMS": "db:5432,nohost,db:99999",
                "AMBASSADOR_TLS_MODE": "verify-full",
                "AMBASSADOR_MAX_CONNECTIONS": "0",
                "AMBASSADOR_DRAIN_TIMEOUT": "soon",
                "AMBASSADOR_CANCEL_RATE": "0",
            }
        )
    text = str(error.value)
    assert "'nohost': expected host:port" in text
    assert "'db:99999': expected host:port" in text
    assert "AMBASSADOR_TLS_CA_FILE is required with AMBASSADOR_TLS_MODE=verify-full" in text
    assert "AMBASSADOR_MAX_CONNECTIONS='0'" in text
    assert "AMBASSADOR_DRAIN_TIMEOUT='soon'" in text
    assert "AMBASSADOR_CANCEL_RATE='0'" in text
    with pytest.raises(ConfigError, match="AMBASSADOR_UPSTREAMS is required"):
        load_config({})


def test_health_password_from_a_file(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("from-a-secret\n")
    config = load_config(
        {
            "AMBASSADOR_UPSTREAMS": "db:5432",
            "AMBASSADOR_HEALTH_USER": "monitor",
            "AMBASSADOR_HEALTH_PASSWORD_FILE": str(secret),
        }
    )
    assert config.health_password() == "from-a-secret"
    assert config.checks_role
    # A rotated Secret is read at the next check, without a restart.
    secret.write_text("rotated\n")
    assert config.health_password() == "rotated"


def test_uvloop_asked_for_but_not_installed_is_a_configuration_error(monkeypatch):
    # Images install it (the uvloop extra); a bare `pip install podpatterns` does not.
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvloop" else real(name, *a))
    with pytest.raises(ConfigError, match="AMBASSADOR_EVENT_LOOP=uvloop: uvloop is not installed"):
        load_config({"AMBASSADOR_UPSTREAMS": "db:5432"})
    chosen = load_config({"AMBASSADOR_UPSTREAMS": "db:5432", "AMBASSADOR_EVENT_LOOP": "asyncio"})
    assert chosen.event_loop == "asyncio"


def _pool(
    upstreams: str, failed: list[Upstream], registry: CollectorRegistry | None = None, **env: str
) -> UpstreamPool:
    config = load_config({"AMBASSADOR_UPSTREAMS": upstreams, **env})
    return UpstreamPool(config, registry or CollectorRegistry(), on_failed=failed.append)


def test_pool_candidates_put_writable_primaries_first_only_with_role_checks():
    failed: list[Upstream] = []
    for role_checks, expected in ((False, ["a:1", "b:2", "c:3"]), (True, ["b:2", "a:1", "c:3"])):
        env = {"AMBASSADOR_HEALTH_USER": "health"} if role_checks else {}
        pool = _pool("a:1,b:2,c:3,d:4", failed, **env)
        a, b, c, d = pool.upstreams
        a.healthy, a.in_recovery = True, True  # a standby
        b.healthy, b.in_recovery = True, False  # a primary
        c.healthy, c.in_recovery = True, None  # up, role unknown
        d.healthy = False
        assert [u.name for u in pool.candidates()] == expected


def test_pool_check_round_fails_over_and_hands_a_dead_upstreams_sessions_to_the_server():
    async def scenario() -> None:
        async def answer_ssl_request(reader, writer) -> None:  # enough for a credential-less check
            await reader.readexactly(8)
            writer.write(b"N")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer_ssl_request, "127.0.0.1", 0)
        alive = server.sockets[0].getsockname()[1]
        failed: list[Upstream] = []
        # The first upstream's port has nothing listening: its check is refused at once.
        registry = CollectorRegistry()
        pool = _pool(f"127.0.0.1:{free_port()},127.0.0.1:{alive}", failed, registry)
        dead, standby = pool.upstreams
        dead.healthy, dead.sessions = True, 2
        pool.preferred = dead
        async with server:
            await pool.check_all()
        assert (dead.healthy, standby.healthy) == (False, True)
        assert failed == [dead]  # the server closes its sessions
        assert pool.preferred is standby
        assert registry.get_sample_value("ambassador_failovers_total") == 1
        assert registry.get_sample_value("ambassador_upstream_healthy", {"upstream": standby.name})
        with pytest.raises(NoUpstream, match="cannot reach any upstream"):
            await pool.connect()  # the listener is gone by now

    asyncio.run(scenario())
