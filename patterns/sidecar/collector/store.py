"""Durable storage of received events as JSON lines, with group commit.

Every event becomes one line `{"tag": ..., "time": <float seconds>, "record": {...}}` in
segment files `records-<n>.jsonl` under the data directory. Writes go through one writer
thread: it takes every batch waiting, writes them, flushes and (when enabled) fsyncs once,
and only then completes the batches' futures, so the Forward server acks only what is on
disk and many small requests share one fsync.

At start the store rebuilds the per-tag counts and the recent-records view from the files
(the active segment's partial last line, left by a crash before any ack, is cut off).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import queue
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import orjson

from patterns.common.forward.protocol import Event, ProtocolError

log = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^records-(\d{6,})\.jsonl$")
_COUNTS_SUFFIX = ".counts.json"  # written when a segment is closed, so start-up skips it


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, tuple | set):
        return list(value)
    return str(value)


# The slow, total fallback: ensure_ascii writes strings that carry undecodable bytes (kept
# as surrogates by the decoder) and integers beyond 64 bits, which orjson refuses.
_encode_any = json.JSONEncoder(separators=(",", ":"), default=_jsonable).encode


def _sanitize(value: Any) -> Any:
    """What JSON can hold: map keys become strings (msgpack allows bin keys), bytes
    become text, non-finite floats null."""
    if isinstance(value, dict):
        return {
            (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): _sanitize(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_sanitize(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # as orjson writes it: NaN and Infinity are not JSON
    return _jsonable(value) if isinstance(value, bytes) else value


def _encode_slow(value: Any) -> bytes:
    return _encode_any(_sanitize(value)).encode("ascii")


def encode_json(value: Any) -> bytes:
    """Compact JSON; orjson because encoding is most of the collector's per-event cost."""
    try:
        return orjson.dumps(value, default=_jsonable, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return _encode_slow(value)


def encode_lines(tag: str, events: list[Event]) -> list[bytes]:
    """One `{"tag": ..., "time": ..., "record": ...}` line per event."""
    head = b'{"tag":' + encode_json(tag) + b',"time":'
    lines: list[bytes] = []
    append = lines.append
    for timestamp, record in events:
        try:
            body = orjson.dumps(record, default=_jsonable, option=orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError:
            body = _encode_slow(record)
        append(b'%b%r,"record":%b}\n' % (head, timestamp, body))
    return lines


class StoreError(Exception):
    pass


class RecordStore:
    def __init__(
        self,
        data_dir: Path,
        *,
        fsync: bool = True,
        segment_bytes: int = 64 * 1024 * 1024,
        recent: int = 1000,
        recent_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.data_dir = data_dir
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()  # counts and recent are read by the admin thread
        self._counts: Counter[str] = Counter()
        # The newest records for /api/records: at most `recent` of them and `recent_bytes`
        # in all (records are client-sized); older ones are read back from the files.
        self._recent: deque[bytes] = deque()
        self._recent_count = recent
        self._recent_bytes = recent_bytes
        self._recent_size = 0
        self._queue: queue.SimpleQueue[tuple[str, list[Event], Future[None]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._writer, name="record-writer", daemon=True)
        self._fd: int | None = None  # the segment being appended to
        self._segment = 0
        self._size = 0
        self._active_counts: Counter[str] = Counter()  # loaded from the active segment
        self._segment_counts: Counter[str] = Counter()  # of the segment being written
        self.last_error: str = ""
        self.on_written: list[Any] = []  # callbacks (events: int, bytes: int, seconds: float)

    # --- start / stop -----------------------------------------------------------------------

    def open(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            segments = self._segments()
        except OSError as exc:
            raise StoreError(f"cannot use data dir {self.data_dir}: {exc}") from None
        for number, path in segments:
            self._load_segment(path, active=number == segments[-1][0])
        # The recent view comes from the newest segments only, however many there are.
        wanted = self._recent_count
        tail: list[bytes] = []
        for _, path in reversed(segments):
            if len(tail) >= wanted:
                break
            tail[:0] = _tail_lines(path, wanted - len(tail))
        self._remember(tail)
        self._segment = segments[-1][0] if segments else 1
        self._open_segment()
        self._thread.start()
        log.info(
            "record store opened",
            extra={
                "data_dir": str(self.data_dir),
                "segments": len(segments),
                "events": self.total(),
            },
        )

    def close(self) -> None:
        """Finish every batch already submitted, then close the files."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # --- writing ----------------------------------------------------------------------------

    async def append(self, tag: str, events: list[Event]) -> None:
        """Store the events; returns once they are written (and fsynced if enabled)."""
        future: Future[None] = Future()
        self._queue.put((tag, events, future))
        await asyncio.wrap_future(future)

    def _writer(self) -> None:
        while True:
            item = self._queue.get()
            batch = [item]
            # Group commit: everything that queued up while we were fsyncing goes together.
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(entry is None for entry in batch)
            # A request whose connection was cancelled meanwhile (shutdown) is skipped; the
            # others can no longer be cancelled, so completing them below cannot fail.
            work = [
                entry
                for entry in batch
                if entry is not None and entry[2].set_running_or_notify_cancel()
            ]
            encoded = self._encode(work)
            if encoded:
                started = time.monotonic()
                try:
                    written, count = self._write(encoded)
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.error("writing records failed", extra={"error": self.last_error})
                    for _, _, future in encoded:
                        future.set_exception(StoreError(self.last_error))
                else:
                    self.last_error = ""
                    for _, _, future in encoded:
                        future.set_result(None)
                    elapsed = time.monotonic() - started
                    for callback in self.on_written:
                        callback(count, written, elapsed)
            if stop:
                return

    @staticmethod
    def _encode(
        work: list[tuple[str, list[Event], Future[None]]],
    ) -> list[tuple[str, list[bytes], Future[None]]]:
        """Encode each request on its own: one that cannot be stored fails alone."""
        encoded = []
        for tag, events, future in work:
            try:
                encoded.append((tag, encode_lines(tag, events), future))
            except RecursionError:
                future.set_exception(
                    ProtocolError("bad_record", "a record is nested too deeply to store as JSON")
                )
        return encoded

    def _write(self, work: list[tuple[str, list[bytes], Future[None]]]) -> tuple[int, int]:
        chunks: list[bytes] = []
        last_lines: list[bytes] = []
        counts: Counter[str] = Counter()
        keep = self._recent_count
        for tag, lines, _ in work:
            chunks.append(b"".join(lines))
            counts[tag] += len(lines)
            last_lines.extend(lines[-keep:])
        data = b"".join(chunks)
        if self._size and self._size + len(data) > self.segment_bytes:
            self._rotate()
        fd = self._fd
        assert fd is not None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync:
                # fdatasync: the data and the file size, without timestamps nobody needs.
                os.fdatasync(fd)
        except OSError:
            # Not acked, so the client sends it again: cut what got written (a partial line
            # would corrupt the next one), so that the retry does not duplicate it.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._size)
            raise
        self._size += len(data)
        with self._lock:
            self._counts.update(counts)
            self._segment_counts.update(counts)
            self._remember(last_lines)
        return len(data), sum(counts.values())

    def _remember(self, lines: list[bytes]) -> None:
        """Add lines to the recent view, dropping the oldest beyond its limits."""
        recent = self._recent
        recent.extend(lines)
        self._recent_size += sum(map(len, lines))
        while recent and (
            len(recent) > self._recent_count or self._recent_size > self._recent_bytes
        ):
            self._recent_size -= len(recent.popleft())

    # --- segments ---------------------------------------------------------------------------

    def _path(self, number: int) -> Path:
        return self.data_dir / f"records-{number:06d}.jsonl"

    def _segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.data_dir.iterdir():
            match = _SEGMENT.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def _open_segment(self) -> None:
        path = self._path(self._segment)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._size = os.fstat(self._fd).st_size
        if self._size == 0 and self.fsync:
            # A new file's directory entry must be durable too, or the fsynced data in it
            # can vanish with it after a power loss.
            directory = os.open(self.data_dir, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        self._segment_counts = Counter(self._active_counts)

    def _rotate(self) -> None:
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        counts_path = self._path(self._segment).with_suffix(_COUNTS_SUFFIX)
        tmp = counts_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(self._segment_counts)))
        os.replace(tmp, counts_path)
        self._segment += 1
        self._active_counts = Counter()
        self._open_segment()

    def _load_segment(self, path: Path, *, active: bool) -> None:
        """Add a segment's per-tag counts (from its counts file once it is closed)."""
        if active:
            _cut_partial_line(path)
        counts_path = path.with_suffix(_COUNTS_SUFFIX)
        segment_counts: Counter[str] = Counter()
        closed_counts = None if active else _read_counts(counts_path)
        if closed_counts is not None:
            segment_counts.update(closed_counts)
        else:
            for line in _lines(path):
                segment_counts[_tag_of(line)] += 1
        self._counts.update(segment_counts)
        if active:
            self._active_counts = segment_counts

    # --- reading ----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def recent(self, tag: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` records (newest last), optionally of one tag only.

        From memory when it holds enough; a rare tag, drowned in memory by busier ones, is
        looked up from the end of the files instead (reading at most _SCAN_BUDGET bytes)."""
        with self._lock:
            if tag is not None and tag not in self._counts:
                return []  # never stored: no need to look through the files
            lines = list(self._recent)
            older_on_disk = sum(self._counts.values()) > len(lines)
        prefix = b'{"tag":' if tag is None else b'{"tag":' + encode_json(tag) + b","
        picked = [line for line in reversed(lines) if line.startswith(prefix)]
        if len(picked) < limit and older_on_disk:
            picked = _scan_back(self._segments(), prefix, limit)
        records = []
        for line in picked[:limit]:
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue  # a line damaged on disk is not worth failing the view for
        records.reverse()
        return records

    def writable(self) -> tuple[bool, str]:
        if self.last_error:
            return False, f"last write failed: {self.last_error}"
        if not os.access(self.data_dir, os.W_OK):
            return False, f"data dir {self.data_dir} is not writable"
        return True, "ok"


def _read_counts(path: Path) -> dict[str, int] | None:
    """A closed segment's counts file, or None when missing or damaged (then the segment
    is counted line by line)."""
    try:
        counts = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(counts, dict) or not all(isinstance(n, int) for n in counts.values()):
        return None
    return counts


def _tag_of(line: bytes) -> str:
    try:
        tag = orjson.loads(line).get("tag")
    except (orjson.JSONDecodeError, AttributeError):
        return "_unreadable"
    return tag if isinstance(tag, str) else "_unreadable"


def _lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield line


def _tail_lines(path: Path, count: int, block: int = 1 << 20) -> list[bytes]:
    """The last `count` lines, reading at most a few MiB from the end."""
    if count <= 0:
        return []
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - 4 * block))
        data = handle.read()
    lines = data.splitlines(keepends=True)
    if size > 4 * block:
        lines = lines[1:]  # the first is probably a fragment
    return [line for line in lines[-count:] if line.strip()]


_SCAN_BUDGET = 64 * 1024 * 1024


def _scan_back(
    segments: list[tuple[int, Path]], prefix: bytes, limit: int, block: int = 1 << 20
) -> list[bytes]:
    """Up to `limit` lines starting with `prefix`, newest first, reading the segments
    backwards from their end and at most _SCAN_BUDGET bytes in all."""
    found: list[bytes] = []
    budget = _SCAN_BUDGET
    for _, path in reversed(segments):
        with open(path, "rb") as handle:
            position = handle.seek(0, os.SEEK_END)
            carry = b""
            first = True
            while position > 0 and budget > 0 and len(found) < limit:
                step = min(block, position, budget)
                position -= step
                budget -= step
                handle.seek(position)
                data = handle.read(step) + carry
                pieces = data.split(b"\n")
                if first:
                    pieces.pop()  # after the last newline: empty, or a write in progress
                    first = False
                carry = pieces.pop(0) if position > 0 else b""
                for line in reversed(pieces):
                    if line.startswith(prefix):
                        found.append(line)
                        if len(found) >= limit:
                            return found
        if budget <= 0:
            break
    return found


def _cut_partial_line(path: Path) -> None:
    """A crash mid-write leaves a partial last line that was never acked: drop it."""
    with open(path, "r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        position = size
        while position > 0:
            step = min(65536, position)
            handle.seek(position - step)
            block = handle.read(step)
            newline = block.rfind(b"\n")
            if newline >= 0:
                position = position - step + newline + 1
                break
            position -= step
        handle.truncate(position)
        log.warning("cut a partial line off the last segment", extra={"path": str(path)})
