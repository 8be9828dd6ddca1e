"""Durable storage of received events as JSON lines, with group commit and retention.

Every event becomes one line `{"tag": ..., "time": <float seconds>, "record": {...}}` in
segment files `records-<n>.jsonl` under the data directory. Writes go through one writer
thread: it takes every batch waiting, writes them, flushes and (when enabled) fsyncs once,
and only then completes the batches' futures, so the Forward server acks only what is on
disk and many small requests share one fsync. Every line is valid UTF-8 JSON that reads
back: text that was not valid UTF-8 is stored with U+FFFD in place of the bad bytes.

Retention is the one place acknowledged records are deleted, and only by the operator's
settings: the oldest closed segments are dropped while the store would pass
`retention_bytes`, or once they are older than `retention_seconds`; each drop is logged
and reported to `on_dropped`, and its counts are kept in `dropped.json`.

At start the store rebuilds the per-tag counts and the recent-records view from the files
(the active segment's partial last line, left by a crash before any ack, is cut off).
Per-tag counts are kept for at most `max_tags` tags (tags are client-chosen), see
TagCounts.
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
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from heapq import nlargest
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

from patterns.common.forward.protocol import Event, ProtocolError
from patterns.common.fsync import fsync_directory

log = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^records-(\d{6,})\.jsonl$")
_COUNTS_SUFFIX = ".counts.json"  # written when a segment is closed, so start-up skips it
_DROPPED = "dropped.json"  # what retention deleted: counts, segments, records, bytes
_MIB = 1024 * 1024


def _text(value: str) -> str:
    """A str the Forward decoder built from invalid UTF-8 keeps the bad bytes as lone
    surrogates, which no JSON reader accepts back: store U+FFFD instead, as for bytes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, tuple | set):
        return list(value)
    return _text(str(value))


# The slow, total fallback for what orjson refuses: strings that carry undecodable bytes
# (kept as surrogates by the decoder; _sanitize replaces them) and integers beyond 64 bits.
_encode_any = json.JSONEncoder(separators=(",", ":"), default=_jsonable).encode


def _sanitize(value: Any) -> Any:
    """What JSON can hold and read back: map keys become strings (msgpack allows bin
    keys), bytes become text, invalid UTF-8 becomes U+FFFD, non-finite floats null."""
    if isinstance(value, dict):
        return {
            (k.decode("utf-8", "replace") if isinstance(k, bytes) else _text(str(k))): _sanitize(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_sanitize(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # as orjson writes it: NaN and Infinity are not JSON
    if isinstance(value, str):
        return _text(value)
    return _jsonable(value) if isinstance(value, bytes) else value


def _encode_slow(value: Any) -> bytes:
    return _encode_any(_sanitize(value)).encode("ascii")


def encode_json(value: Any) -> bytes:
    """Compact JSON; orjson because encoding is most of the collector's per-event cost."""
    try:
        return orjson.dumps(value, default=_jsonable, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return _encode_slow(value)


def encode_lines(tag: str, events: list[Event], max_bytes: int | None = None) -> list[bytes]:
    """One `{"tag": ..., "time": ..., "record": ...}` line per event. Past `max_bytes` in
    all it stops with ProtocolError("too_large"): JSON can be much larger than the
    request (the tag on every line, escapes), so it is counted as it is built."""
    head = b'{"tag":' + encode_json(tag) + b',"time":'
    lines: list[bytes] = []
    append = lines.append
    dumps = orjson.dumps
    size = 0
    for timestamp, record in events:
        try:
            body = dumps(record, default=_jsonable, option=orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError:
            body = _encode_slow(record)
        # The time (a finite float, checked by the decoder) by orjson too: the digits of
        # repr() at a tenth of its cost, which was a tenth of the collector's CPU per line.
        # (Below 1e-4 it writes 5e-6 where repr wrote 5e-06: the same number to any reader.)
        line = b'%b%b,"record":%b}\n' % (head, dumps(timestamp), body)
        if max_bytes is not None:
            size += len(line)
            if size > max_bytes:
                raise ProtocolError(
                    "too_large", f"the request's records exceed {max_bytes} bytes as JSON lines"
                )
        append(line)
    return lines


class StoreError(Exception):
    pass


class TagCounts:
    """Events per tag, for at most `limit` tags: tags are client-chosen, and without a
    bound a client sending new tags grows memory and /api/counts without end.

    Exact while at most `limit` distinct tags have been seen. Past that, a new tag takes
    the place of the tag with the smallest count (the longest-tracked of them on a tie),
    whose events move to `other`: tags sent often stay, one-off tags make way for each
    other, and a tag's count is then what arrived since it was last taken in (a lower
    bound). `total` is always exact."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.tags: dict[str, int] = {}
        self.other = 0  # events of tags not (or no longer) tracked
        self.total = 0
        self.complete = True  # False once a tag had to make way

    def add(self, tag: str, count: int) -> None:
        self.total += count
        tags = self.tags
        if tag in tags:
            tags[tag] += count
            return
        if len(tags) >= self.limit:
            smallest = min(tags, key=tags.__getitem__)
            self.other += tags.pop(smallest)
            self.complete = False
        tags[tag] = count

    def update(self, counts: TagCounts) -> None:
        for tag, count in counts.tags.items():
            self.add(tag, count)
        self.other += counts.other
        self.total += counts.other
        self.complete = self.complete and counts.complete

    def top(self, count: int) -> dict[str, int]:
        return dict(nlargest(count, self.tags.items(), key=itemgetter(1)))

    def to_json(self) -> dict[str, Any]:
        return {"tags": self.tags, "other": self.other, "complete": self.complete}

    @classmethod
    def from_json(cls, data: Any, limit: int) -> TagCounts | None:
        """From to_json(), or the older flat {tag: count} form; None if damaged."""
        if not isinstance(data, dict):
            return None
        nested = isinstance(data.get("tags"), dict)
        tags, other = (data["tags"], data.get("other", 0)) if nested else (data, 0)
        if not isinstance(other, int) or not all(
            isinstance(tag, str) and isinstance(n, int) and n >= 0 for tag, n in tags.items()
        ):
            return None
        counts = cls(limit)
        for tag, n in tags.items():
            counts.add(tag, n)
        counts.other += max(0, other)
        counts.total += max(0, other)
        counts.complete = counts.complete and (data.get("complete", True) is True)
        return counts


@dataclass
class Dropped:
    """What retention has deleted since the data dir was created."""

    segments: int = 0
    records: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class _Closed:
    number: int
    size: int  # the segment and its counts file
    written: float  # wall-clock time of its last write (mtime)


# Callbacks: on_written(events, bytes, seconds); on_dropped(segments, records, bytes, reason)
Written = Callable[[int, int, float], None]
DroppedCallback = Callable[[int, int, int, str], None]


class RecordStore:
    def __init__(
        self,
        data_dir: Path,
        *,
        fsync: bool = True,
        segment_bytes: int = 16 * _MIB,
        recent: int = 1000,
        recent_bytes: int = 8 * _MIB,
        retention_bytes: int = 0,  # 0: no limit by size
        retention_seconds: float = 0.0,  # 0: no limit by age
        max_tags: int = 1000,
        max_request_bytes: int | None = None,  # JSON lines of one request; None: no limit
    ) -> None:
        self.data_dir = data_dir
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.retention_bytes = retention_bytes
        self.retention_seconds = retention_seconds
        # A segment is closed (so it can age out) a quarter of the retention after it was
        # started: a record is kept between retention_seconds and 1.25 times that.
        self.segment_seconds = retention_seconds / 4
        self.max_tags = max_tags
        self.max_request_bytes = max_request_bytes
        self._lock = threading.Lock()  # counts and recent are read by the admin thread
        self._counts = TagCounts(max_tags)  # every record since the data dir was created
        self._dropped = Dropped()
        self._dropped_counts = TagCounts(max_tags)
        # The newest records for /api/records: at most `recent` of them and `recent_bytes`
        # in all (records are client-sized); older ones are read back from the files.
        self._recent: deque[bytes] = deque()
        self._recent_count = recent
        self._recent_bytes = recent_bytes
        self._recent_size = 0
        self._scan_lock = threading.Lock()  # one look through the files at a time
        self._queue: queue.SimpleQueue[tuple[str, list[Event], Future[None]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._writer, name="record-writer", daemon=True)
        self._fd: int | None = None  # the segment being appended to
        self._segment = 0
        self._size = 0
        self._started = 0.0  # wall-clock time the active segment was taken up for writing
        self._closed: deque[_Closed] = deque()  # oldest first
        self._closed_bytes = 0
        self._dropped_file_bytes = 0
        self._segment_counts = TagCounts(max_tags)  # of the segment being written
        self.last_error: str = ""
        self.on_written: list[Written] = []
        self.on_dropped: list[DroppedCallback] = []

    # --- start / stop -----------------------------------------------------------------------

    def open(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            segments = self._segments()
        except OSError as exc:
            raise StoreError(f"cannot use data dir {self.data_dir}: {exc}") from None
        self._load_dropped()
        for number, path in segments:
            self._load_segment(number, path, active=number == segments[-1][0])
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
        if self._size and self.segment_seconds:
            # Its first record is at least as old as its last write.
            self._started = min(self._started, os.stat(self._path(self._segment)).st_mtime)
        self._thread.start()
        log.info(
            "record store opened",
            extra={
                "data_dir": str(self.data_dir),
                "segments": len(segments),
                "events": self.total(),
                "stored_bytes": self.stored_bytes(),
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
        # With an age limit the writer also wakes up on its own, to drop what aged out
        # while nothing was written.
        interval = (
            min(60.0, max(0.1, self.retention_seconds / 20)) if self.segment_seconds else None
        )
        while True:
            try:
                item = self._queue.get(timeout=interval)
            except queue.Empty:
                self._maintain()
                continue
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

    def _encode(
        self, work: list[tuple[str, list[Event], Future[None]]]
    ) -> list[tuple[str, list[bytes], Future[None]]]:
        """Encode each request on its own: one that cannot be stored fails alone."""
        encoded = []
        for tag, events, future in work:
            try:
                encoded.append((tag, encode_lines(tag, events, self.max_request_bytes), future))
            except ProtocolError as exc:
                # Without the traceback: its frames hold the lines encoded so far.
                future.set_exception(exc.with_traceback(None))
            except RecursionError:
                future.set_exception(
                    ProtocolError("bad_record", "a record is nested too deeply to store as JSON")
                )
        return encoded

    def _write(self, work: list[tuple[str, list[bytes], Future[None]]]) -> tuple[int, int]:
        last_lines: list[bytes] = []
        counts: dict[str, int] = {}
        keep = self._recent_count
        size = 0
        for tag, lines, _ in work:
            size += sum(map(len, lines))
            counts[tag] = counts.get(tag, 0) + len(lines)
            last_lines.extend(lines[-keep:])
        if self._size and (self._size + size > self.segment_bytes or self._aged(time.time())):
            self._rotate()
        self._retain(size)
        fd = self._fd
        assert fd is not None
        try:
            for _, lines, _ in work:
                # A request at a time: one copy of its lines in memory, not of the batch's.
                view = memoryview(b"".join(lines))
                while view:
                    view = view[os.write(fd, view) :]
                del view
            if self.fsync:
                # fdatasync: the data and the file size, without timestamps nobody needs.
                os.fdatasync(fd)
        except OSError:
            # Not acked, so the client sends it again: cut what got written (a partial line
            # would corrupt the next one), so that the retry does not duplicate it.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._size)
            raise
        if not self._size:
            self._started = time.time()
        self._size += size
        with self._lock:
            for tag, count in counts.items():
                self._counts.add(tag, count)
                self._segment_counts.add(tag, count)
            self._remember(last_lines)
        return size, sum(counts.values())

    def _remember(self, lines: list[bytes]) -> None:
        """Add lines to the recent view, dropping the oldest beyond its limits."""
        recent = self._recent
        recent.extend(lines)
        self._recent_size += sum(map(len, lines))
        while recent and (
            len(recent) > self._recent_count or self._recent_size > self._recent_bytes
        ):
            self._recent_size -= len(recent.popleft())

    # --- retention --------------------------------------------------------------------------

    def stored_bytes(self) -> int:
        """What the store takes on disk: segments, their counts files, dropped.json."""
        return self._closed_bytes + self._size + self._dropped_file_bytes

    def dropped(self) -> Dropped:
        with self._lock:
            return Dropped(self._dropped.segments, self._dropped.records, self._dropped.bytes)

    def _aged(self, now: float) -> bool:
        """The active segment has been written to long enough to close it."""
        return bool(self.segment_seconds) and now - self._started >= self.segment_seconds

    def _maintain(self) -> None:
        """Between writes: close an aged active segment, drop what aged out."""
        try:
            if self._size and self._aged(time.time()):
                self._rotate()
            self._retain(0)
        except Exception as exc:  # the writer thread must go on
            log.error("retention failed", extra={"error": f"{type(exc).__name__}: {exc}"})

    def _retain(self, incoming: int) -> None:
        """Drop the oldest closed segments while the store plus `incoming` bytes would
        pass retention_bytes, and those last written more than retention_seconds ago."""
        now = time.time()
        while self._closed:
            oldest = self._closed[0]
            too_large = bool(self.retention_bytes) and (
                self.stored_bytes() + incoming > self.retention_bytes
            )
            too_old = bool(self.retention_seconds) and now - oldest.written > self.retention_seconds
            if not (too_large or too_old):
                return
            if not self._drop(oldest, "size" if too_large else "age"):
                return

    def _drop(self, segment: _Closed, reason: str) -> bool:
        path = self._path(segment.number)
        counts_path = path.with_suffix(_COUNTS_SUFFIX)
        counts = _read_counts(counts_path, self.max_tags) or _count_lines(path, self.max_tags)
        try:
            path.unlink(missing_ok=True)
            counts_path.unlink(missing_ok=True)
        except OSError as exc:
            log.error(
                "retention could not delete a segment",
                extra={"segment": path.name, "error": f"{type(exc).__name__}: {exc}"},
            )
            return False
        self._closed.popleft()
        self._closed_bytes -= segment.size
        with self._lock:
            self._dropped.segments += 1
            self._dropped.records += counts.total
            self._dropped.bytes += segment.size
            self._dropped_counts.update(counts)
            # The recent view shows records still stored only: the oldest of it may have
            # been in this segment.
            for _ in range(len(self._recent) - (self._counts.total - self._dropped.records)):
                self._recent_size -= len(self._recent.popleft())
            summary = {
                "segments": self._dropped.segments,
                "records": self._dropped.records,
                "bytes": self._dropped.bytes,
                "counts": self._dropped_counts.to_json(),
            }
        self._dropped_file_bytes = _write_json(self.data_dir / _DROPPED, summary)
        log.warning(
            "retention dropped the oldest segment",
            extra={
                "segment": path.name,
                "records": counts.total,
                "bytes": segment.size,
                "reason": reason,
                "retention_bytes": self.retention_bytes,
                "retention_seconds": self.retention_seconds,
            },
        )
        for callback in self.on_dropped:
            callback(1, counts.total, segment.size, reason)
        return True

    def _load_dropped(self) -> None:
        path = self.data_dir / _DROPPED
        try:
            data = json.loads(path.read_text())
            counts = TagCounts.from_json(data["counts"], self.max_tags)
            dropped = Dropped(int(data["segments"]), int(data["records"]), int(data["bytes"]))
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring a damaged dropped.json", extra={"error": str(exc)})
            return
        if counts is not None:
            self._dropped, self._dropped_counts = dropped, counts
            self._counts.update(counts)
            self._dropped_file_bytes = path.stat().st_size

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
        self._started = time.time()
        if self._size == 0 and self.fsync:
            # A new file's directory entry must be durable too, or the fsynced data in it
            # can vanish with it after a power loss.
            fsync_directory(self.data_dir)

    def _rotate(self) -> None:
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        path = self._path(self._segment)
        counts_size = _write_json(path.with_suffix(_COUNTS_SUFFIX), self._segment_counts.to_json())
        closed = _Closed(self._segment, self._size + counts_size, path.stat().st_mtime)
        self._closed.append(closed)
        self._closed_bytes += closed.size
        self._segment += 1
        self._segment_counts = TagCounts(self.max_tags)
        self._open_segment()

    def _load_segment(self, number: int, path: Path, *, active: bool) -> None:
        """Add a segment's per-tag counts (from its counts file once it is closed)."""
        if active:
            _cut_partial_line(path)
        counts_path = path.with_suffix(_COUNTS_SUFFIX)
        counts = None if active else _read_counts(counts_path, self.max_tags)
        if counts is None:
            counts = _count_lines(path, self.max_tags)
        self._counts.update(counts)
        if active:
            self._segment_counts = counts
            return
        stat = path.stat()
        size = stat.st_size + (counts_path.stat().st_size if counts_path.exists() else 0)
        self._closed.append(_Closed(number, size, stat.st_mtime))
        self._closed_bytes += size

    # --- reading ----------------------------------------------------------------------------

    def counts(self, top: int = 100) -> dict[str, Any]:
        """/api/counts: the `top` tags by events (in name order), the events of all the
        others, and how many tags are tracked (exact while at most max_tags were seen)."""
        with self._lock:
            tags = self._counts.top(top)
            return {
                "tags": dict(sorted(tags.items())),
                "total": self._counts.total,
                "other": self._counts.total - sum(tags.values()),
                "distinct_tags": len(self._counts.tags),
            }

    def total(self) -> int:
        with self._lock:
            return self._counts.total

    def recent_lines(self, tag: str | None, limit: int) -> list[bytes]:
        """The newest `limit` records (newest last) as JSON objects, optionally of one tag
        only, and at most _RESPONSE_BYTES of them (records are client-sized).

        From memory when it holds enough; a rare tag, drowned in memory by busier ones, is
        looked up from the end of the files instead (reading at most _SCAN_BUDGET bytes,
        one look at a time)."""
        with self._lock:
            if tag is not None and tag not in self._counts.tags and self._counts.complete:
                return []  # never stored: no need to look through the files
            lines = list(self._recent)
            older_on_disk = self._counts.total > len(lines)
        prefix = b'{"tag":' if tag is None else b'{"tag":' + encode_json(tag) + b","
        picked = [line for line in reversed(lines) if line.startswith(prefix)]
        if len(picked) < limit and older_on_disk:
            with self._scan_lock:
                picked = _scan_back(self._segments(), prefix, limit, _RESPONSE_BYTES)
        chosen: list[bytes] = []
        size = 0
        for line in picked[:limit]:
            size += len(line)
            if size > _RESPONSE_BYTES and chosen:
                break
            readable = _readable_line(line)
            if readable is not None:
                chosen.append(readable)
        chosen.reverse()
        return chosen

    def recent(self, tag: str | None, limit: int) -> list[dict[str, Any]]:
        """recent_lines, decoded."""
        return [orjson.loads(line) for line in self.recent_lines(tag, limit)]

    def writable(self) -> tuple[bool, str]:
        if self.last_error:
            return False, f"last write failed: {self.last_error}"
        if not os.access(self.data_dir, os.W_OK):
            return False, f"data dir {self.data_dir} is not writable"
        return True, "ok"


def _write_json(path: Path, value: Any) -> int:
    """Replace a small JSON file atomically; its size."""
    data = json.dumps(value, separators=(",", ":")).encode()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return len(data)


def _read_counts(path: Path, max_tags: int) -> TagCounts | None:
    """A closed segment's counts file, or None when missing or damaged (then the segment
    is counted line by line)."""
    try:
        return TagCounts.from_json(json.loads(path.read_text()), max_tags)
    except (OSError, ValueError):
        return None


def _count_lines(path: Path, max_tags: int) -> TagCounts:
    counts = TagCounts(max_tags)
    with contextlib.suppress(FileNotFoundError):
        for line in _lines(path):
            counts.add(_tag_of(line), 1)
    return counts


def _readable_line(line: bytes) -> bytes | None:
    """A stored line as a JSON object any reader accepts (without its newline); None for
    a line damaged on disk."""
    line = line.rstrip(b"\n")
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        decoded = _decode_line(line)
        return None if decoded is None else encode_json(decoded)
    return line if isinstance(value, dict) else None


def _decode_line(line: bytes) -> dict[str, Any] | None:
    """A stored line -> its object. Lines written before invalid UTF-8 was replaced on
    the way in carry lone surrogate escapes orjson refuses: the standard library reads
    them, and they are replaced the same way. None for a line damaged on disk."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            value = _sanitize(json.loads(line))
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def _tag_of(line: bytes) -> str:
    record = _decode_line(line)
    tag = None if record is None else record.get("tag")
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
# At most this much of records in one /api/records answer, however large they are.
_RESPONSE_BYTES = 8 * 1024 * 1024


def _scan_back(
    segments: Iterable[tuple[int, Path]],
    prefix: bytes,
    limit: int,
    max_bytes: int,
    block: int = 1 << 20,
) -> list[bytes]:
    """Up to `limit` lines starting with `prefix` and `max_bytes` of them, newest first,
    reading the segments backwards from their end and at most _SCAN_BUDGET bytes in all.
    A segment that retention deletes meanwhile is skipped."""
    found: list[bytes] = []
    found_bytes = 0
    budget = _SCAN_BUDGET
    for _, path in reversed(list(segments)):
        try:
            handle = open(path, "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            continue
        with handle:
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
                        found_bytes += len(line)
                        if len(found) >= limit or found_bytes >= max_bytes:
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
