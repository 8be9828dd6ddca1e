"""The ambassador's pure parts: wire messages, SCRAM-SHA-256, md5, the auth filter, config;
and which runtime the demo's `make ambassador-failover` acts on."""

from __future__ import annotations

import hashlib
import importlib.util
import struct

import pytest

from patterns.ambassador.db_ambassador import pgwire
from patterns.ambassador.db_ambassador.config import load_config
from patterns.common.config import ConfigError


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


def test_auth_filter_withdraws_channel_binding_then_steps_aside():
    auth_ok = pgwire.message(b"R", struct.pack("!I", pgwire.AUTH_OK))
    after = pgwire.message(b"S", b"server_version\x0015\x00") + pgwire.message(b"Z", b"I")
    stream = _sasl("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256") + auth_ok + after
    auth_filter = pgwire.AuthFilter()
    # Fed one byte at a time: messages split across reads must come out whole.
    out = b"".join(auth_filter.feed(stream[i : i + 1]) for i in range(len(stream)))
    assert out == _sasl("SCRAM-SHA-256") + auth_ok + after
    assert auth_filter.done
    assert auth_filter.feed(b"\xff raw") == b"\xff raw"


def test_auth_filter_passes_an_error_and_everything_after_it():
    error = pgwire.error_response("28P01", "password authentication failed")
    auth_filter = pgwire.AuthFilter()
    assert auth_filter.feed(error + b"rest") == error + b"rest"
    assert auth_filter.done


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
            }
        )
    text = str(error.value)
    assert "'nohost': expected host:port" in text
    assert "'db:99999': expected host:port" in text
    assert "AMBASSADOR_TLS_CA_FILE is required with AMBASSADOR_TLS_MODE=verify-full" in text
    assert "AMBASSADOR_MAX_CONNECTIONS='0'" in text
    assert "AMBASSADOR_DRAIN_TIMEOUT='soon'" in text
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
