"""Fluentd Forward protocol v1: encoding, decoding and handshake digests.

Follows the Forward Protocol Specification v1 (fluent/fluentd wiki): four carrier modes
(Message, Forward, PackedForward, CompressedPackedForward), EventTime as msgpack ext
type 0, the `option` map (`size`, `chunk`, `compressed`), `{"ack": chunk}` responses and
the HELO / PING / PONG handshake with SHA-512 hex digests.

Everything here is pure: no sockets. Malformed input raises `ProtocolError(reason,
detail)`, where `reason` is one of a small fixed set of words (used as a metrics label)
and `detail` says what exactly was wrong.

Input is untrusted, and msgpack turns a byte into a Python object of up to ~80 bytes (an
empty map), so nothing here builds objects from bytes that have not been bounded first:
`Framer` finds where each request ends without building anything, a request is decoded
only once it is complete, and decoding counts every map, array and element against
`Limits.max_values` and every decompressed byte against `Limits.max_decompressed_bytes`
as it goes, stopping at the limit instead of after the allocation.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import math
import os
import struct
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
from fluent.sender import EventTime

# Carrier modes, as named by the spec (also the values of the `mode` metrics label).
MESSAGE = "message"
FORWARD = "forward"
PACKED_FORWARD = "packed_forward"
COMPRESSED_PACKED_FORWARD = "compressed_packed_forward"

_EVENT_TIME = struct.Struct(">II")

Event = tuple[float, dict[str, Any]]


class ProtocolError(Exception):
    """Input that does not follow the Forward protocol (or exceeds a configured limit)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


_MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Bounds that keep one hostile request from exhausting memory. The defaults fit a
    small pod (see the log-collector's README for the sums); a log-shipper request is at
    most 1 MiB of entries and 50,000 events."""

    max_frame_bytes: int = 2 * _MIB  # one msgpack request on the wire
    max_decompressed_bytes: int = 2 * _MIB  # gzip output of one request
    max_entries: int = 100_000  # events in one request
    # Maps, arrays and their elements (a map's keys and values) in one request, at any
    # depth: what bounds the Python objects a request decodes to (up to ~100 bytes each).
    # A shipper's event ([time, {"log", "file"}]) counts 8, so its largest request (1 MiB
    # of entries of 26 bytes or more) counts at most ~323,000.
    max_values: int = 400_000


DEFAULT_LIMITS = Limits()


# --- encoding -----------------------------------------------------------------------------


def new_chunk_id() -> str:
    """The spec's `chunk`: Base64 of a 128-bit unique id."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def event_time(seconds: float) -> EventTime:
    return EventTime(seconds)


def encode_entry(timestamp: float, record: dict[str, Any]) -> bytes:
    """One `Entry` ([EventTime, record]) of a MessagePackEventStream."""
    return msgpack.packb([EventTime(timestamp), record], use_bin_type=True)


def encode_message(
    tag: str, timestamp: float, record: dict[str, Any], chunk: str | None = None
) -> bytes:
    """A Message mode request; with `chunk` the server must answer with an ack."""
    request: list[Any] = [tag, EventTime(timestamp), record]
    if chunk is not None:
        request.append({"chunk": chunk})
    return msgpack.packb(request, use_bin_type=True)


def encode_forward(
    tag: str, events: list[tuple[float, dict[str, Any]]], chunk: str | None = None
) -> bytes:
    """A Forward mode request: entries as a msgpack array."""
    option: dict[str, Any] = {"size": len(events)}
    if chunk is not None:
        option["chunk"] = chunk
    entries = [[EventTime(t), record] for t, record in events]
    return msgpack.packb([tag, entries, option], use_bin_type=True)


def encode_packed_forward(
    tag: str,
    entries: bytes,
    count: int,
    chunk: str | None = None,
    *,
    compressed: bool = False,
    compresslevel: int = 6,
) -> bytes:
    """A PackedForward request; with `compressed`, `entries` (the concatenated raw
    entries) is gzipped here and the request becomes CompressedPackedForward."""
    option: dict[str, Any] = {"size": count}
    if chunk is not None:
        option["chunk"] = chunk
    if compressed:
        entries = gzip.compress(entries, compresslevel=compresslevel)
        option["compressed"] = "gzip"
    return msgpack.packb([tag, entries, option], use_bin_type=True)


def encode_ack(chunk: str) -> bytes:
    return msgpack.packb({"ack": chunk}, use_bin_type=True)


# --- decoding -----------------------------------------------------------------------------

# Bytes handed to msgpack at a time, so that its buffer holds a piece, not a whole request.
_PIECE = 64 * 1024


class _Values:
    """Counts maps, arrays and their elements as msgpack builds them (its list_hook and
    object_hook); past the limit the decoding stops and what it built is freed."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.limit = limit

    def array(self, value: list[Any]) -> list[Any]:
        self.left -= 1 + len(value)
        if self.left < 0:
            self._exceeded()
        return value

    def map(self, value: dict[Any, Any]) -> dict[Any, Any]:
        self.left -= 1 + 2 * len(value)
        if self.left < 0:
            self._exceeded()
        return value

    def _exceeded(self) -> None:
        raise ProtocolError(
            "too_many_values", f"more than {self.limit} maps, arrays and elements in one request"
        )

    def options(self) -> dict[str, Any]:
        """msgpack keyword arguments: the hooks, and no single container past the limit
        (msgpack allocates a container's declared length up front)."""
        return {
            "list_hook": self.array,
            "object_hook": self.map,
            "max_array_len": self.limit,
            "max_map_len": self.limit // 2,
        }


def _decode_error(exc: Exception, where: str) -> ProtocolError:
    # msgpack's own check of one container against max_array_len / max_map_len.
    reason = "too_many_values" if "exceeds max_" in str(exc) else "bad_msgpack"
    return ProtocolError(reason, f"{where}{type(exc).__name__}: {exc}")


def ext_hook(code: int, data: bytes) -> float:
    """msgpack ext hook: EventTime (type 0, 8 bytes) becomes float seconds."""
    if code != 0:
        raise ProtocolError("bad_msgpack", f"unsupported msgpack ext type {code}")
    if len(data) != 8:
        raise ProtocolError("bad_time", f"EventTime must be 8 bytes, got {len(data)}")
    seconds, nanoseconds = _EVENT_TIME.unpack(data)
    if nanoseconds >= 1_000_000_000:
        raise ProtocolError("bad_time", f"EventTime nanoseconds out of range: {nanoseconds}")
    return seconds + nanoseconds / 1e9


def new_unpacker(max_buffer_size: int) -> msgpack.Unpacker:
    """A streaming unpacker for the wire. `surrogateescape` keeps `str`-typed binary
    (out_forward sends PackedForward entries as str) recoverable as bytes;
    max_buffer_size also bounds every declared str/bin/array/map length."""
    return msgpack.Unpacker(
        raw=False,
        unicode_errors="surrogateescape",
        ext_hook=ext_hook,
        max_buffer_size=max_buffer_size,
        strict_map_key=True,
    )


# Returned by next_object when the buffer holds no complete object yet.
NOTHING_YET = object()
_PARTIAL = object()


def next_object(unpacker: msgpack.Unpacker) -> Any:
    """The next complete msgpack object, or `NOTHING_YET` if more bytes are needed.
    Malformed msgpack (bad type bytes, excessive nesting or declared lengths) raises
    ProtocolError."""
    try:
        return next(unpacker)
    except StopIteration:
        return NOTHING_YET
    except ProtocolError:
        raise
    except (ValueError, msgpack.UnpackException) as exc:
        raise ProtocolError("bad_msgpack", f"{type(exc).__name__}: {exc}") from None


def feed(unpacker: msgpack.Unpacker, data: bytes, max_frame_bytes: int) -> None:
    """Add bytes from the wire; a request that cannot fit in the buffer is an error."""
    try:
        unpacker.feed(data)
    except msgpack.BufferFull:
        raise ProtocolError("too_large", f"request exceeds {max_frame_bytes} bytes") from None


class Framer:
    """Cuts one connection's byte stream into requests without decoding them.

    msgpack's parser skips over what arrives (in C, building no Python object) to find
    where each request ends; the bytes are kept here until the request is complete. A
    partial request therefore costs its bytes, twice at most (the parser's buffer also
    holds the unparsed part of a str or bin being received), however it is built. A
    request past `max_frame_bytes` and malformed msgpack raise ProtocolError; a declared
    length that can never arrive just waits, bounded by the size limit and by the
    caller's deadline."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._raw = bytearray()
        self._ends: deque[int] = deque()  # lengths of the complete requests at the front
        self._fed = 0  # bytes given to the skipper since it was created
        self._end = 0  # where, in those, the last complete request ends
        self._skipper = self._new_skipper()

    def _new_skipper(self) -> msgpack.Unpacker:
        # Room for a whole request plus the piece that completes it.
        size = self.max_frame_bytes + _PIECE
        return msgpack.Unpacker(max_buffer_size=size, read_size=min(_PIECE, size))

    @property
    def held(self) -> int:
        """Bytes held: complete requests not yet taken, and the partial one."""
        return len(self._raw)

    @property
    def receiving(self) -> bool:
        """True while part of a request has arrived and the rest has not."""
        return self._fed > self._end

    def feed(self, data: bytes) -> None:
        self._raw += data
        view = memoryview(data)
        for start in range(0, len(view), _PIECE):
            try:
                self._skipper.feed(view[start : start + _PIECE])
            except msgpack.BufferFull:
                self._too_large()
            self._fed += min(_PIECE, len(view) - start)
            self._skip()

    def _skip(self) -> None:
        while True:
            try:
                self._skipper.skip()
            except msgpack.OutOfData:
                break
            except (ValueError, msgpack.UnpackException) as exc:
                raise ProtocolError("bad_msgpack", f"{type(exc).__name__}: {exc}") from None
            end = self._skipper.tell()
            if end - self._end > self.max_frame_bytes:
                self._too_large()
            self._ends.append(end - self._end)
            self._end = end
        if self._fed - self._end > self.max_frame_bytes:
            self._too_large()

    def _too_large(self) -> None:
        raise ProtocolError("too_large", f"request exceeds {self.max_frame_bytes} bytes")

    def next_frame(self) -> bytes | None:
        """The next complete request's bytes, or None until one has arrived."""
        if not self._ends:
            return None
        length = self._ends.popleft()
        if length == len(self._raw):
            frame = bytes(self._raw)
            # Nothing pending: start afresh, so that a large request's buffers go with it.
            self._raw = bytearray()
            self._ends.clear()
            self._fed = self._end = 0
            self._skipper = self._new_skipper()
            return frame
        with memoryview(self._raw) as view:
            frame = bytes(view[:length])
        del self._raw[:length]
        return frame


def unpack(frame: bytes, limits: Limits = DEFAULT_LIMITS, values: _Values | None = None) -> Any:
    """One complete msgpack object (a request or a handshake message) -> Python, counting
    its maps, arrays and elements against `limits.max_values`."""
    if values is None:
        values = _Values(limits.max_values)
    try:
        return msgpack.unpackb(
            frame,
            raw=False,
            unicode_errors="surrogateescape",
            ext_hook=ext_hook,
            strict_map_key=True,
            **values.options(),
        )
    except ProtocolError:
        raise
    except (ValueError, msgpack.UnpackException) as exc:
        raise _decode_error(exc, "") from None


def decode_frame(frame: bytes, limits: Limits = DEFAULT_LIMITS) -> Request | None:
    """A complete request's bytes (from Framer) -> Request; None for a heartbeat."""
    values = _Values(limits.max_values)
    return decode_request(unpack(frame, limits, values), limits, values)


@dataclass(frozen=True)
class Request:
    """One decoded transport-phase request."""

    tag: str
    mode: str
    events: list[Event]
    chunk: str | None  # the client wants `{"ack": chunk}` once the events are stored


MAX_TAG_CHARS = 1024


def valid_tag(tag: object) -> bool:
    """Whether a server takes `tag`: a non-empty string of at most MAX_TAG_CHARS printable
    characters (lone surrogates, from bytes that are not UTF-8, are not printable). What a
    client checks before it sends, so a tag it makes is never retried forever."""
    return isinstance(tag, str) and 0 < len(tag) <= MAX_TAG_CHARS and tag.isprintable()


def _check_tag(tag: Any) -> str:
    if not isinstance(tag, str) or not tag:
        raise ProtocolError("bad_tag", f"tag must be a non-empty string, got {_kind(tag)}")
    if not valid_tag(tag):
        raise ProtocolError("bad_tag", f"tag must be at most {MAX_TAG_CHARS} printable characters")
    return tag


def _check_time(value: Any) -> float:
    # bool is an int subclass; a `true` time is garbage, not second 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError("bad_time", f"time must be an integer or EventTime, got {_kind(value)}")
    if not math.isfinite(value) or value < 0 or value >= 2**32:
        raise ProtocolError("bad_time", f"time out of range: {value!r}")
    if value == 0:
        return time.time()  # as in_forward does: 0 means "stamp it on arrival"
    return float(value)


def _check_record(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise ProtocolError("bad_record", f"record must be a map, got {_kind(record)}")
    return record


def _check_option(option: Any) -> tuple[str | None, bool]:
    """-> (chunk, compressed)."""
    if option is None:
        return None, False
    if not isinstance(option, dict):
        raise ProtocolError("bad_option", f"option must be a map, got {_kind(option)}")
    chunk = option.get("chunk")
    if chunk is not None and (not isinstance(chunk, str) or not 0 < len(chunk) <= 128):
        raise ProtocolError("bad_option", "chunk must be a string of at most 128 characters")
    if chunk is not None and not _is_utf8(chunk):
        # It goes back in the ack: refuse it before the events are stored, not after.
        raise ProtocolError("bad_option", "chunk must be valid UTF-8")
    size = option.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ProtocolError("bad_option", "size must be a non-negative integer")
    # `size` is advisory (the spec lets servers ignore options) and is not compared with
    # the entries: fluent-logger for Node sends the byte length there, not the count.
    # Any `compressed` value other than "gzip" is ignored, as the spec says.
    return chunk, option.get("compressed") == "gzip"


def _check_entry(entry: Any) -> Event:
    if not isinstance(entry, list | tuple) or len(entry) != 2:
        raise ProtocolError(
            "bad_entry", f"entry must be a [time, record] array, got {_kind(entry)}"
        )
    return _check_time(entry[0]), _check_record(entry[1])


def gunzip_pieces(data: bytes, max_bytes: int) -> Iterator[bytes]:
    """Decompress one or more concatenated gzip members a piece at a time. Every piece is
    counted before it is produced (zlib's max_length): past `max_bytes` it stops with
    ProtocolError("too_large"), having never held more than one piece."""
    produced = 0
    remaining: bytes = data
    while remaining:
        inflater = zlib.decompressobj(wbits=31)
        try:
            while True:
                piece = inflater.decompress(remaining, min(_PIECE, max_bytes - produced + 1))
                produced += len(piece)
                if produced > max_bytes:
                    raise ProtocolError(
                        "too_large", f"decompressed entries exceed {max_bytes} bytes"
                    )
                if piece:
                    yield piece
                if inflater.eof:
                    break  # the next member, if any, is in unused_data
                tail = inflater.unconsumed_tail
                if not piece and len(tail) == len(remaining):
                    break  # zlib needs input it will not get: truncated
                remaining = tail
        except zlib.error as exc:
            raise ProtocolError("bad_gzip", str(exc)) from None
        if not inflater.eof:
            raise ProtocolError("bad_gzip", "truncated gzip stream")
        remaining = inflater.unused_data


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """All of gunzip_pieces at once (a gzip bomb stops at the limit)."""
    return b"".join(gunzip_pieces(data, max_bytes))


def _pieces(data: bytes) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), _PIECE):
        yield view[start : start + _PIECE]


def decode_entries(
    stream: bytes | Iterable[bytes | memoryview],
    limits: Limits = DEFAULT_LIMITS,
    values: _Values | None = None,
) -> list[Event]:
    """A MessagePackEventStream (concatenated raw entries, or the pieces of one) -> events.

    Fed to msgpack a piece at a time: its buffer holds a piece and the entry being
    decoded, not a copy of the whole stream."""
    if values is None:
        values = _Values(limits.max_values)
    pieces = _pieces(stream) if isinstance(stream, bytes | bytearray) else stream
    largest = max(limits.max_frame_bytes, limits.max_decompressed_bytes) + _PIECE
    unpacker = msgpack.Unpacker(
        raw=False,
        unicode_errors="surrogateescape",
        ext_hook=ext_hook,
        max_buffer_size=largest,
        read_size=_PIECE,
        strict_map_key=True,
        **values.options(),
    )
    events: list[Event] = []
    append = events.append
    max_entries = limits.max_entries
    try:
        for piece in pieces:
            unpacker.feed(piece)
            for entry in unpacker:
                if len(events) >= max_entries:
                    raise ProtocolError("too_many_entries", f"more than {max_entries} entries")
                # Fast path for the usual entry ([EventTime, map]); anything else gets the
                # full check, which normalises integer times or raises.
                if type(entry) is list and len(entry) == 2:
                    timestamp, record = entry
                    if type(timestamp) is float and type(record) is dict and 0 < timestamp < 2**32:
                        append((timestamp, record))
                        continue
                append(_check_entry(entry))
    except ProtocolError:
        raise
    except msgpack.BufferFull:
        raise ProtocolError("too_large", f"an entry exceeds {largest} bytes") from None
    except (ValueError, msgpack.UnpackException) as exc:
        raise _decode_error(exc, "entries: ") from None
    # Is the stream cut in the middle of an entry? Feed a nil: a clean unpacker returns
    # exactly that nil, one holding a partial entry swallows it into that entry instead.
    unpacker.feed(b"\xc0")
    try:
        clean = next(unpacker, _PARTIAL) is None
    except (ValueError, msgpack.UnpackException, ProtocolError):
        clean = False
    if not clean:
        raise ProtocolError("bad_entry", "entries end in the middle of an entry")
    return events


def _as_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise ProtocolError("bad_entries", f"{what} must be bin or str, got {_kind(value)}")


def decode_request(
    obj: Any, limits: Limits = DEFAULT_LIMITS, values: _Values | None = None
) -> Request | None:
    """One unpacked request -> Request; None for the spec's `nil` heartbeat.

    The mode is detected, as the spec says, by the type of the second element."""
    if obj is None:
        return None
    if not isinstance(obj, list | tuple):
        raise ProtocolError("bad_request", f"request must be an array, got {_kind(obj)}")
    if not 2 <= len(obj) <= 4:
        raise ProtocolError("bad_request", f"request array has {len(obj)} elements")
    tag = _check_tag(obj[0])
    second = obj[1]
    if isinstance(second, list | tuple):
        if len(obj) > 3:
            raise ProtocolError("bad_request", "Forward request has more than 3 elements")
        chunk, _ = _check_option(obj[2] if len(obj) == 3 else None)
        if len(second) > limits.max_entries:
            raise ProtocolError("too_many_entries", f"{len(second)} > {limits.max_entries}")
        events = [_check_entry(entry) for entry in second]
        return Request(tag, FORWARD, events, chunk)
    if isinstance(second, bytes | str):
        if len(obj) > 3:
            raise ProtocolError("bad_request", "PackedForward request has more than 3 elements")
        chunk, compressed = _check_option(obj[2] if len(obj) == 3 else None)
        stream = _as_bytes(second, "entries")
        if compressed:
            pieces = gunzip_pieces(stream, limits.max_decompressed_bytes)
            events = decode_entries(pieces, limits, values)
            return Request(tag, COMPRESSED_PACKED_FORWARD, events, chunk)
        return Request(tag, PACKED_FORWARD, decode_entries(stream, limits, values), chunk)
    # Message: [tag, time, record, option?]
    if len(obj) < 3:
        raise ProtocolError("bad_request", "Message request needs tag, time and record")
    chunk, _ = _check_option(obj[3] if len(obj) == 4 else None)
    return Request(tag, MESSAGE, [(_check_time(second), _check_record(obj[2]))], chunk)


def decode_ack(obj: Any) -> str:
    if not isinstance(obj, dict) or not isinstance(obj.get("ack"), str):
        raise ProtocolError("bad_response", f"expected {{'ack': chunk}}, got {_kind(obj)}")
    return obj["ack"]


def _kind(value: Any) -> str:
    return "nil" if value is None else type(value).__name__


# --- handshake ----------------------------------------------------------------------------


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def shared_key_digest(
    salt: str | bytes, hostname: str | bytes, nonce: str | bytes, shared_key: str | bytes
) -> str:
    """sha512_hex(shared_key_salt + hostname + nonce + shared_key), as in PING and PONG."""
    return hashlib.sha512(_b(salt) + _b(hostname) + _b(nonce) + _b(shared_key)).hexdigest()


def password_digest(auth_salt: str | bytes, username: str, password: str) -> str:
    """sha512_hex(auth_salt + username + raw_password), PING's `password`."""
    return hashlib.sha512(_b(auth_salt) + _b(username) + _b(password)).hexdigest()


@dataclass(frozen=True)
class Helo:
    nonce: bytes
    auth: bytes  # empty: the server does not ask for username/password
    keepalive: bool


@dataclass(frozen=True)
class Ping:
    client_hostname: str
    shared_key_salt: bytes
    shared_key_hexdigest: str
    username: str
    password: str


@dataclass(frozen=True)
class Pong:
    auth_result: bool
    reason: str
    server_hostname: str
    shared_key_hexdigest: str


def encode_helo(nonce: bytes, auth: bytes = b"", keepalive: bool = True) -> bytes:
    return msgpack.packb(
        ["HELO", {"nonce": nonce, "auth": auth, "keepalive": keepalive}], use_bin_type=True
    )


def encode_ping(
    helo: Helo,
    client_hostname: str,
    shared_key: str,
    username: str = "",
    password: str = "",
    shared_key_salt: bytes | None = None,
) -> tuple[bytes, bytes]:
    """-> (PING request, the shared_key_salt used, needed to verify the PONG)."""
    salt = os.urandom(16) if shared_key_salt is None else shared_key_salt
    digest = shared_key_digest(salt, client_hostname, helo.nonce, shared_key)
    password_hex = password_digest(helo.auth, username, password) if helo.auth else ""
    ping = ["PING", client_hostname, salt, digest, username if helo.auth else "", password_hex]
    return msgpack.packb(ping, use_bin_type=True), salt


def encode_pong(auth_result: bool, reason: str, server_hostname: str, digest: str) -> bytes:
    return msgpack.packb(["PONG", auth_result, reason, server_hostname, digest], use_bin_type=True)


def _message(obj: Any, kind: str, length: int) -> list[Any]:
    if not isinstance(obj, list | tuple) or not obj or obj[0] != kind:
        raise ProtocolError("bad_handshake", f"expected {kind}, got {_describe(obj)}")
    if len(obj) != length:
        raise ProtocolError("bad_handshake", f"{kind} must have {length} elements, got {len(obj)}")
    return list(obj)


def _describe(obj: Any) -> str:
    if isinstance(obj, list | tuple) and obj and isinstance(obj[0], str):
        return f"{obj[0][:16]!r} message"
    return _kind(obj)


def decode_helo(obj: Any) -> Helo:
    _, options = _message(obj, "HELO", 2)
    if not isinstance(options, dict):
        raise ProtocolError("bad_handshake", "HELO options must be a map")
    nonce, auth = options.get("nonce"), options.get("auth", b"")
    keepalive = options.get("keepalive", True)
    if not isinstance(nonce, bytes | str) or not isinstance(auth, bytes | str):
        raise ProtocolError("bad_handshake", "HELO nonce and auth must be str or bin")
    if not isinstance(keepalive, bool):
        raise ProtocolError("bad_handshake", "HELO keepalive must be a boolean")
    return Helo(_b(nonce), _b(auth), keepalive)


def _is_utf8(text: str) -> bool:
    """False for a str the decoder built from invalid UTF-8 (kept as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode_ping(obj: Any) -> Ping:
    _, hostname, salt, digest, username, password = _message(obj, "PING", 6)
    texts = (hostname, digest, username, password)
    if not isinstance(salt, bytes | str) or not all(isinstance(v, str) for v in texts):
        raise ProtocolError("bad_handshake", "PING fields have the wrong types")
    if not all(_is_utf8(v) for v in texts):
        raise ProtocolError("bad_handshake", "PING fields must be valid UTF-8")
    return Ping(hostname, _b(salt), digest, username, password)


def decode_pong(obj: Any) -> Pong:
    _, auth_result, reason, hostname, digest = _message(obj, "PONG", 5)
    texts = (reason, hostname, digest)
    if not isinstance(auth_result, bool) or not all(isinstance(v, str) for v in texts):
        raise ProtocolError("bad_handshake", "PONG fields have the wrong types")
    if not all(_is_utf8(v) for v in texts):
        raise ProtocolError("bad_handshake", "PONG fields must be valid UTF-8")
    return Pong(auth_result, reason, hostname, digest)


def check_ping(
    ping: Ping,
    nonce: bytes,
    shared_key: str,
    auth_salt: bytes = b"",
    users: dict[str, str] | None = None,
) -> str:
    """Verify a PING on the server side: '' if it passes, else the reason for PONG."""
    expected = shared_key_digest(ping.shared_key_salt, ping.client_hostname, nonce, shared_key)
    if not hmac_equal(expected, ping.shared_key_hexdigest):
        return "shared key mismatch"
    if users:
        password = users.get(ping.username)
        if password is None or not hmac_equal(
            password_digest(auth_salt, ping.username, password), ping.password
        ):
            return "username/password mismatch"
    return ""


def hmac_equal(a: str, b: str) -> bool:
    # Total: a str decoded from invalid UTF-8 compares unequal instead of raising.
    return hmac.compare_digest(_b(a), _b(b))
