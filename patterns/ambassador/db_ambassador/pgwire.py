"""The few pieces of the PostgreSQL wire protocol (v3) the ambassador needs.

The ambassador is protocol-aware only at the edges: the client's SSLRequest, startup packet
and CancelRequest, the server's messages up to its first ReadyForQuery (for the session's
BackendKeyData, and to withdraw channel binding over TLS), the ErrorResponse it sends when
it refuses a session, and a small client for health checks (startup, authentication:
cleartext, md5, SCRAM-SHA-256; a simple query). Everything after that is relayed as bytes,
never parsed.

Reference: https://www.postgresql.org/docs/15/protocol-message-formats.html
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct

PROTOCOL_3_0 = 196608
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
# libpq never sends a startup packet anywhere near this long; PostgreSQL's own limit.
MAX_STARTUP_LENGTH = 10000
# A cancel key is the BackendKeyData body: process id, then the secret (4 bytes in protocol
# 3.0, up to 256 in 3.2). A CancelRequest is its length, its code, then that key.
MAX_CANCEL_KEY = 4 + 256
MAX_CANCEL_LENGTH = 8 + MAX_CANCEL_KEY
# Bigger than any message a server sends before its first ReadyForQuery; a larger length
# means we are not reading PostgreSQL (and nothing that size is buffered to find out).
MAX_STARTUP_MESSAGE = 1 << 20

# Authentication request codes (the int32 after an 'R' message).
AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12

# SQLSTATEs the ambassador answers with.
TOO_MANY_CONNECTIONS = "53300"
CONNECTION_FAILURE = "08006"
PROTOCOL_VIOLATION = "08P01"


class ProtocolError(Exception):
    """The peer sent something that is not the PostgreSQL protocol we expect."""


def ssl_request() -> bytes:
    return struct.pack("!II", 8, SSL_REQUEST_CODE)


def message(kind: bytes, body: bytes = b"") -> bytes:
    """A typed message: one type byte, int32 length (itself included), body."""
    return kind + struct.pack("!I", len(body) + 4) + body


def startup_message(params: dict[str, str]) -> bytes:
    body = struct.pack("!I", PROTOCOL_3_0)
    for key, value in params.items():
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def startup_length(header: bytes) -> int:
    """Length of an untyped startup-phase packet from its first 4 bytes (validated)."""
    (length,) = struct.unpack("!I", header)
    if not 8 <= length <= MAX_STARTUP_LENGTH:
        raise ProtocolError(f"startup packet length {length} out of range")
    return length


def startup_code(packet: bytes) -> int:
    """The int32 after the length: a protocol version or a special request code."""
    return int(struct.unpack_from("!I", packet, 4)[0])


def is_cancel_request(packet: bytes) -> bool:
    return startup_code(packet) == CANCEL_REQUEST_CODE and 16 <= len(packet) <= MAX_CANCEL_LENGTH


def cancel_key(packet: bytes) -> bytes:
    """The key a CancelRequest presents, in the form of the BackendKeyData body that
    issued it (process id, secret)."""
    return packet[8:]


def startup_params(packet: bytes) -> dict[str, str]:
    """The key/value pairs of a protocol 3 startup packet (for logs: user, database)."""
    fields = packet[8:].split(b"\0")
    params: dict[str, str] = {}
    for key, value in zip(fields[0::2], fields[1::2], strict=False):
        if not key:
            break
        params[key.decode(errors="replace")] = value.decode(errors="replace")
    return params


def error_response(sqlstate: str, text: str, severity: str = "FATAL") -> bytes:
    """An ErrorResponse as a server sends it: libpq and psycopg show the message and
    expose the SQLSTATE (e.g. psycopg's `e.sqlstate`)."""
    body = b""
    for code, value in ((b"S", severity), (b"V", severity), (b"C", sqlstate), (b"M", text)):
        body += code + value.encode() + b"\0"
    return message(b"E", body + b"\0")


def parse_error_fields(body: bytes) -> dict[str, str]:
    """ErrorResponse/NoticeResponse body -> {field code: value}, e.g. {'C': '28P01'}."""
    fields: dict[str, str] = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


def describe_error(body: bytes) -> str:
    fields = parse_error_fields(body)
    return f"{fields.get('S', 'ERROR')} {fields.get('C', '?????')}: {fields.get('M', '')}"


def password_message(password: str) -> bytes:
    return message(b"p", password.encode() + b"\0")


def md5_password(user: str, password: str, salt: bytes) -> str:
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


def query_message(sql: str) -> bytes:
    return message(b"Q", sql.encode() + b"\0")


def terminate_message() -> bytes:
    return message(b"X")


def sasl_mechanisms(body: bytes) -> list[str]:
    """The mechanism names of an AuthenticationSASL body (after the int32 code)."""
    return [name.decode() for name in body[4:].split(b"\0") if name]


def sasl_initial_response(mechanism: str, data: bytes) -> bytes:
    return message(b"p", mechanism.encode() + b"\0" + struct.pack("!i", len(data)) + data)


def sasl_response(data: bytes) -> bytes:
    return message(b"p", data)


def first_column(data_row: bytes) -> str | None:
    """The first value of a DataRow body, as text (None for SQL NULL)."""
    (count,) = struct.unpack_from("!H", data_row, 0)
    if count == 0:
        return None
    (length,) = struct.unpack_from("!i", data_row, 2)
    if length < 0:
        return None
    return data_row[6 : 6 + length].decode()


class ScramSha256:
    """The client side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL uses it: no
    channel binding ("n,,"), and the user name is sent empty because the server takes it
    from the startup packet."""

    def __init__(self, password: str, user: str = "", client_nonce: str | None = None) -> None:
        self.password = password
        self.nonce = client_nonce or base64.b64encode(secrets.token_bytes(18)).decode()
        self.first_bare = f"n={user},r={self.nonce}"
        self._server_signature = b""

    def client_first(self) -> bytes:
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = dict(item.split("=", 1) for item in text.split(","))
        server_nonce, salt, iterations = attrs["r"], attrs["s"], int(attrs["i"])
        if not server_nonce.startswith(self.nonce):
            raise ProtocolError("SCRAM: server nonce does not extend the client nonce")
        salted = hashlib.pbkdf2_hmac(
            "sha256", self.password.encode(), base64.b64decode(salt), iterations
        )
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={server_nonce}"
        auth_message = f"{self.first_bare},{text},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self._server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server_final(self, server_final: bytes) -> None:
        attrs = dict(item.split("=", 1) for item in server_final.decode().split(","))
        if "e" in attrs:
            raise ProtocolError(f"SCRAM: server error {attrs['e']}")
        if not hmac.compare_digest(base64.b64decode(attrs.get("v", "")), self._server_signature):
            raise ProtocolError("SCRAM: server signature mismatch (not the server we trust)")


class StartupFilter:
    """Reads the server's messages until its first ReadyForQuery (or an ErrorResponse, which
    ends a session that is starting), then steps aside.

    On the way it keeps the BackendKeyData: the key a CancelRequest for this session must
    present, which is how the ambassador knows which upstream, if any, a cancel is for.

    With `withdraw_plus` it also rewrites the authentication offer. The ambassador speaks
    TLS to the server but plaintext to the client, so a server that offers
    SCRAM-SHA-256-PLUS (channel binding, only possible over TLS) would make libpq refuse:
    "server offered SCRAM-SHA-256-PLUS authentication over a non-SSL connection". Channel
    binding cannot span two TLS-less/TLS legs anyway, so the ambassador withdraws -PLUS
    from the offer and the client uses plain SCRAM-SHA-256.
    """

    def __init__(self, withdraw_plus: bool) -> None:
        self.withdraw_plus = withdraw_plus
        self.done = False
        self.backend_key: bytes | None = None
        self._pending = b""

    def _step_aside(self, out: list[bytes], rest: bytes) -> bytes:
        self.done = True
        self._pending = b""
        out.append(rest)
        return b"".join(out)

    def feed(self, data: bytes) -> bytes:
        """Bytes from the server in, bytes for the client out."""
        if self.done:
            return data
        buffer = self._pending + data
        out: list[bytes] = []
        offset = 0
        while len(buffer) - offset >= 5:
            kind = buffer[offset : offset + 1]
            (length,) = struct.unpack_from("!I", buffer, offset + 1)
            if not 4 <= length <= MAX_STARTUP_MESSAGE:  # not PostgreSQL: relay it untouched
                return self._step_aside(out, buffer[offset:])
            end = offset + 1 + length
            if end > len(buffer):
                break
            body = buffer[offset + 5 : end]
            code = struct.unpack_from("!I", body)[0] if kind == b"R" and len(body) >= 4 else None
            if code == AUTH_SASL and self.withdraw_plus:
                names = [n for n in sasl_mechanisms(body) if n != "SCRAM-SHA-256-PLUS"]
                body = struct.pack("!I", AUTH_SASL) + b"".join(n.encode() + b"\0" for n in names)
                out.append(message(b"R", body + b"\0"))
            else:
                out.append(buffer[offset:end])
            if kind == b"K" and 8 <= len(body) <= MAX_CANCEL_KEY:
                self.backend_key = bytes(body)
            offset = end
            if kind in (b"Z", b"E"):
                return self._step_aside(out, buffer[offset:])
        self._pending = buffer[offset:]
        return b"".join(out)
