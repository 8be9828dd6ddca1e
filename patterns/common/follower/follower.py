"""Follow log files the way a production shipper must; see the package docstring for use.

Each followed file is a `Stream` (stream.py): its descriptor, positions, held incomplete
line and head. The follower owns them: it opens and closes them, goes round them to
read, hands out their lines and keeps their checkpoints; its lock guards all of it.

Beside this module: `discovery.py` finds the files to follow and what became of them
(scans, inotify events on a watcher thread, rename rotations, generations created and
rotated away between two looks), `access.py` decides what may be opened at all (links,
FIFOs, /proc files, paths outside the globs' directories), `locate.py` finds a file's
content again (a copytruncate's copy, a checkpointed file renamed or copied, generations
rotated while we were down), `truncation.py` tells a file truncated in place (shorter
than our position, or with another head) and goes on from its copy, `recovery.py`
reopens what the checkpoints name at start, `watch.py` says what inotify's events mean,
`checkpoints.py` stores positions and `lines.py` turns bytes into lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from patterns.common.follower.access import REFUSALS, Access
from patterns.common.follower.access import pread as _pread
from patterns.common.follower.checkpoints import Checkpoint, CheckpointStore, encode_checkpoint
from patterns.common.follower.discovery import Discovery
from patterns.common.follower.lines import LineBuffer, LineStats
from patterns.common.follower.locate import Locator
from patterns.common.follower.recovery import Recovery, resume_offset
from patterns.common.follower.stream import Chunk, Ident, Stream, up_to_line
from patterns.common.follower.truncation import Truncations

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_line_bytes: int = 64 * 1024  # longer lines are split (or truncated)
    truncate_long_lines: bool = False  # False: split into pieces; True: keep the first piece
    rotate_wait: float = 5.0  # keep a rotated file open this long after its last growth
    fingerprint_bytes: int = 1024  # head bytes that identify a file's content
    poll_interval: float = 0.25  # how often to look at files when no event arrives
    # With inotify: the full glob scan and the look at files no event named (safety nets);
    # polling: poll_interval.
    rescan_interval: float = 2.0
    use_inotify: bool = True
    # False: read only regular files that are no symlink and whose real path stays inside
    # the directories the globs name (the app can plant links to any file we can read).
    # True: follow links anywhere (a node agent on /var/log/containers needs it).
    follow_symlinks: bool = False
    # Files open at once (live, rotated, found at start); more are refused until one
    # closes. Each may hold an incomplete line of up to max_line_bytes.
    max_files: int = 256


@dataclass
class FollowerStats(LineStats):
    lines_read: int = 0
    bytes_read: int = 0
    rotations: int = 0  # followed files renamed away
    deletions: int = 0  # followed files deleted
    truncations: int = 0  # followed files truncated in place (copytruncate)
    copies_found: int = 0  # copytruncate copies found and read from the truncation point
    truncations_without_copy: int = 0  # lines between our position and the truncation lost
    files_opened: int = 0
    files_closed: int = 0
    checkpoints_lost: int = 0  # checkpointed files found nowhere at start
    rotated_while_down: int = 0  # newer rotated files found at start and read from 0
    # Files not read, by reason (see REFUSALS): once per path, not at every look.
    files_refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REFUSALS, 0))


class Follower:
    def __init__(
        self,
        globs: list[str],
        store: CheckpointStore | None,
        limits: Limits | None = None,
    ) -> None:
        if not globs:
            raise ValueError("at least one glob is needed")
        self.globs = [os.path.abspath(pattern) for pattern in globs]
        self.store = store
        self.limits = limits or Limits()
        self.stats = FollowerStats()
        self._lock = threading.RLock()
        self._save_lock = threading.Lock()
        self._streams: dict[int, Stream] = {}
        # Work per commit, read or event must not grow with the number of files followed:
        # a commit encodes and saves the checkpoints of the files that changed (the store
        # appends them to its journal);
        # the order read() goes round in is kept until a file comes, goes or is renamed;
        # only files still shorter than the fingerprint are looked at for their head
        # (discovery.py).
        self._changed: set[int] = set()
        self._groups: tuple[list[str], dict[str, list[Stream]]] | None = None
        # Where each file is now (path -> seq), for the names inotify events carry.
        self._by_path: dict[str, int] = {}
        # Live files read to their end with no inotify event for them since: read()
        # passes them by until an event names them, and looks at all of them again every
        # rescan_interval, the safety net of the full scan (inotify reports every write
        # and truncation on a local file system, and a lost event queue wakes them all;
        # looking every poll_interval cost a node agent at 1,000 idle files about 5% of a
        # core). Without the watcher thread every file is looked at each time.
        self._quiet: set[int] = set()
        self._next_sweep = 0.0
        self._by_ident: dict[Ident, Stream] = {}
        self._seq = 0
        self._rr = 0
        self._started = False
        self._access = Access(self.globs, self.limits.follow_symlinks, self.stats.files_refused)
        self._locate = Locator(self._access)
        self._truncations = Truncations(
            self.limits.fingerprint_bytes,
            self.stats,
            self._access,
            self._locate,
            self._by_ident,
            self._renew,
        )
        # Which files are followed: scans, inotify events (its watcher thread), rotations.
        self._discovery = Discovery(
            self.globs,
            self.limits,
            self.stats,
            self._lock,
            self._access,
            self._locate,
            self._truncations,
            streams=self._streams,
            followed=self._by_ident,
            open_file=self._open,
            wake=self._wake,
            wake_all=self._wake_all,
        )
        self._save_pending = False
        self._flush_quiet: float | None = None  # set by flush_incomplete (final shutdown)

    # --- public API -----------------------------------------------------------------------

    @property
    def uses_inotify(self) -> bool:
        return self._discovery.uses_inotify

    def start(self) -> None:
        """Load checkpoints, watch directories and open the files (read() does it too)."""
        with self._lock:
            if self._started:
                return
            self._started = True
            self._discovery.start()  # the watcher thread, if any
            if self.store is not None:
                Recovery(
                    self._locate, self.stats, self._open, self._by_ident, self._discovery.matches
                ).run(self.store.load())
            self._discovery.scan()

    def read(
        self, max_bytes: int = 1024 * 1024, timeout: float = 1.0, max_lines: int | None = None
    ) -> Chunk | None:
        """The next lines (about max_bytes of file data at most, and about max_lines lines:
        short lines cost far more memory downstream than their bytes) from some file, or
        None when nothing new arrived within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._started:
                    self.start()
                self._discovery.activity.clear()  # set by the watcher after anything it handles
                self._discovery.handle_events()
                now = time.monotonic()
                if now >= self._discovery.next_scan:
                    self._discovery.scan()
                if now >= self._next_sweep:
                    self._wake_all()
                    self._next_sweep = now + self.limits.rescan_interval
                chunk = self._next_chunk(max(max_bytes, 4096), max_lines)
                save = self._save_pending
                self._save_pending = False
            if save:
                self.save()  # a file was closed: drop it from the checkpoints
            if chunk is not None:
                return chunk
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._discovery.wait(min(remaining, self.limits.poll_interval))

    def poll(self) -> None:
        """Look at the files now without reading them: open new ones, take their heads,
        notice rotations. Without inotify, call it every `poll_interval` while the consumer
        cannot take chunks (its destination is down), so that files created and rotated
        away meanwhile are held open and not missed."""
        with self._lock:
            if not self._started:
                self.start()
            self._discovery.handle_events()
            self._discovery.scan()

    def commit(self, *chunks: Chunk) -> None:
        """The consumer has durably handled `chunks` (and every chunk before them from
        the same files): advance and save the checkpoints, once for all of them (a batch
        may hold chunks of many files). Chunks of one file must be committed in the order
        they were read."""
        with self._lock:
            for chunk in chunks:
                stream: Stream = chunk._stream
                stream.committed = max(stream.committed, chunk.end)
                self._close_if_done(stream)
        self.save()

    def save(self, final: bool = False) -> None:
        """Write the checkpoints now (commit does it; call it with final=True at shutdown
        to make them durable against a power cut too)."""
        if self.store is None:
            return
        with self._save_lock:
            with self._lock:
                changes = self._checkpoint_changes(refresh=final)
            try:
                self.store.update(changes, final=final)
            except OSError as exc:
                log.error("cannot save checkpoints", extra={"error": str(exc)})

    def flush_incomplete(self, quiet: float) -> None:
        """For a final shutdown (the app may be gone for good, as in a Job): from now on
        read() also delivers a file's incomplete last line as a line once the file has
        not grown for `quiet` seconds (the live file too; a rotated one even before
        rotate_wait). Committing that chunk puts the checkpoint after
        the delivered bytes, inside the line: if the app completes the line later, the
        rest is read as a line of its own; nothing is delivered twice or lost."""
        with self._lock:
            self._flush_quiet = quiet
            self._wake_all()  # every file is looked at until it is quiet enough

    def holds_incomplete(self) -> bool:
        """True while some file's incomplete last line has been read but not delivered."""
        with self._lock:
            return any(s.buffer.pending for s in self._streams.values() if not s.closed)

    def unread(self, path: str) -> bool:
        """Whether a file followed under the name `path` (a chunk's `path`) has bytes
        that were not read yet: the lines after the last ones handed out are there."""
        with self._lock:
            for stream in self._streams.values():
                if stream.origin != path or stream.detached or stream.closed:
                    continue
                try:
                    if os.fstat(stream.fd).st_size > stream.read_pos:
                        return True
                except OSError:
                    continue
            return False

    def backlog_bytes(self) -> int:
        """Bytes in followed files not yet committed (what a restart would read again)."""
        with self._lock:
            total = 0
            for stream in self._streams.values():
                if stream.detached:
                    continue
                try:
                    size = os.fstat(stream.fd).st_size
                except OSError:
                    continue
                total += max(0, size - stream.committed)
            return total

    def files(self) -> list[dict[str, Any]]:
        """What is followed now, for a status page."""
        with self._lock:
            return [
                {
                    "path": s.path,
                    "origin": s.origin,
                    "live": s.live,
                    "read": s.read_pos,
                    "committed": s.committed,
                }
                for s in self._streams.values()
            ]

    def healthy(self) -> tuple[bool, str]:
        """For a readiness check: the watcher thread (if any) is running."""
        if self._discovery.watcher_stopped():
            return False, "file watcher thread stopped"
        return True, "ok"

    @property
    def followed(self) -> int:
        return len(self._streams)

    def close(self) -> None:
        self._discovery.stop()
        with self._lock:
            for stream in list(self._streams.values()):
                self._close(stream, count=False)
            self._discovery.close()
        if self.store is not None:
            with self._save_lock:
                self.store.close()

    # --- reading ----------------------------------------------------------------------------

    def _next_chunk(self, max_bytes: int, max_lines: int | None) -> Chunk | None:
        """Round robin over followed names; within one name, rotated or copied files
        (older content) before the live file."""
        if self._groups is None:
            groups: dict[str, list[Stream]] = {}
            for stream in sorted(self._streams.values(), key=lambda s: (s.live, s.seq)):
                groups.setdefault(stream.origin, []).append(stream)
            self._groups = sorted(groups), groups
        names, groups = self._groups
        if not names:
            return None
        self._rr = (self._rr + 1) % len(names)
        for name in names[self._rr :] + names[: self._rr]:
            for stream in groups[name]:
                if stream.seq in self._quiet:
                    continue
                chunk = self._read_stream(stream, max_bytes, max_lines)
                if chunk is not None:
                    return chunk
        return None

    def _read_stream(
        self, stream: Stream, max_bytes: int, max_lines: int | None
    ) -> Chunk | None:
        if stream.closed:
            return None
        if stream.finished:
            self._close_if_done(stream)
            return None
        if stream.detached:
            return self._finish(stream)
        while True:
            want = max(max_bytes - len(stream.buffer.pending), 4096)
            block = _pread(stream.fd, want, stream.read_pos)
            now = time.monotonic()
            if not block:
                if self._truncations.check(stream):
                    return None
                quiet = now - stream.last_growth
                if not stream.live and quiet >= self.limits.rotate_wait:
                    return self._finish(stream)
                if self._flush_quiet is not None and quiet >= self._flush_quiet:
                    held = stream.buffer.flush()
                    if held:
                        return self._hand_out(stream, held, stream.read_pos)
                if stream.live and self._flush_quiet is None:
                    self._rest(stream)
                return None
            had_head = bool(stream.head)
            if not self._truncations.head_intact(stream):
                # Truncated (and maybe rewritten) before or while we read: `block` may be
                # new content at an old offset. Drop it; the new content is read from 0.
                self._truncations.handle(stream)
                return None
            if self._discovery.copied_before_first_bytes(stream, had_head):
                return None  # the copy's older lines first; `block` is read again later
            read = len(block)
            if max_lines is not None:
                block = up_to_line(block, max_lines)  # the rest is read next time
            stream.read_pos += len(block)
            stream.last_growth = now
            self.stats.bytes_read += len(block)
            lines = stream.buffer.feed(block)
            end = stream.read_pos - len(stream.buffer.pending)
            if lines:
                return self._hand_out(stream, lines, end)
            if stream.committed == stream.handed_out:
                # Only discarded bytes (rest of a truncated long line): nothing to deliver.
                stream.committed = stream.handed_out = end
            if read < want:
                return None

    def _hand_out(self, stream: Stream, lines: list[str], end: int) -> Chunk:
        chunk = Chunk(stream.origin, lines, stream.handed_out, end, stream)
        stream.handed_out = end
        self.stats.lines_read += len(lines)
        return chunk

    def _finish(self, stream: Stream) -> Chunk | None:
        """The file is done (rotated and quiet, or truncated away): deliver the held
        incomplete line as a line and close the file once everything is committed."""
        stream.finished = True
        lines = stream.buffer.flush()
        if lines:
            return self._hand_out(stream, lines, stream.read_pos)
        self._close_if_done(stream)
        return None

    def _close_if_done(self, stream: Stream) -> None:
        if stream.finished and not stream.closed and stream.committed >= stream.handed_out:
            log.info("file done", extra={"path": stream.path, "origin": stream.origin})
            self._close(stream)

    def _close(self, stream: Stream, count: bool = True) -> None:
        stream.closed = True
        if count and stream.fd >= 0:
            self._discovery.done(stream)
        if stream.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(stream.fd)
        self._streams.pop(stream.seq, None)
        self._stream_changed(stream, "closed")
        if self._by_ident.get(stream.ident) is stream:
            del self._by_ident[stream.ident]
        if count:
            self.stats.files_closed += 1
            self._save_pending = True

    # --- checkpoints ---------------------------------------------------------------------------

    def _checkpoint_changes(self, refresh: bool = False) -> dict[int, str | None]:
        """The checkpoints that changed since the last save, encoded (None: the file is
        no longer followed); all of them with `refresh`, to take every file's
        modification time."""
        changed = self._changed | self._streams.keys() if refresh else self._changed
        changes: dict[int, str | None] = {}
        for seq in sorted(changed):
            stream = self._streams.get(seq)
            if stream is None or stream.detached:
                changes[seq] = None
            else:
                changes[seq] = encode_checkpoint(stream.checkpoint())
        self._changed.clear()
        return changes

    def _stream_changed(self, stream: Stream, name: str, old: Any = None) -> None:
        """A stream's checkpointed state changed (see `Stream.__setattr__`)."""
        self._changed.add(stream.seq)
        if name in ("origin", "live", "closed"):
            self._groups = None
        if name in ("path", "closed"):
            gone = old if name == "path" else stream.path
            if isinstance(gone, str) and self._by_path.get(gone) == stream.seq:
                del self._by_path[gone]
            if name == "path":
                self._by_path[stream.path] = stream.seq
        self._quiet.discard(stream.seq)

    def _stream_at(self, path: str) -> Stream | None:
        stream = self._streams.get(self._by_path.get(path, 0))
        return stream if stream is not None and stream.path == path else None

    # --- quiet files ------------------------------------------------------------------------

    def _rest(self, stream: Stream) -> None:
        """`stream` is read to its end: pass it by until an event names it (only with the
        watcher thread, and only in a watched directory, where its writes are reported)."""
        if self._discovery.reports_writes(os.path.dirname(stream.path)):
            self._quiet.add(stream.seq)

    def _wake(self, path: str) -> Stream | None:
        """An event named `path`: read its file again (None: none is followed there)."""
        stream = self._stream_at(path)
        if stream is not None:
            self._quiet.discard(stream.seq)
        return stream

    def _wake_all(self) -> None:
        self._quiet.clear()

    # --- following files -----------------------------------------------------------------

    def _open(
        self, path: str, *, origin: str, live: bool, checkpoint: Checkpoint | None = None
    ) -> Stream | None:
        if len(self._streams) >= self.limits.max_files:
            self._access.refuse(path, "too_many_files", None)  # looked at again at every scan
            return None
        opened = self._access.open(path)
        if opened is None:
            return None
        fd, st = opened
        ident = (st.st_dev, st.st_ino)
        if ident in self._by_ident:
            os.close(fd)
            return self._by_ident[ident]
        offset = 0 if checkpoint is None else resume_offset(fd, st.st_size, checkpoint)
        self._seq += 1
        stream = self._add_stream(fd, ident, path, origin=origin, live=live, offset=offset)
        self.stats.files_opened += 1
        log.info(
            "following file",
            extra={"path": path, "origin": origin, "offset": offset, "live": live},
        )
        return stream

    def _renew(self, stream: Stream) -> None:
        """Follow `stream`'s file again from 0, as a new stream on the same descriptor."""
        self._seq += 1
        self._add_stream(
            stream.fd, stream.ident, stream.path, origin=stream.origin, live=stream.live, offset=0
        )

    def _add_stream(
        self, fd: int, ident: Ident, path: str, *, origin: str, live: bool, offset: int
    ) -> Stream:
        stream = Stream(
            seq=self._seq,
            on_change=self._stream_changed,
            fd=fd,
            ident=ident,
            path=path,
            origin=origin,
            live=live,
            read_pos=offset,
            committed=offset,
            handed_out=offset,
            head=_pread(fd, self.limits.fingerprint_bytes, 0),
            buffer=LineBuffer(
                self.limits.max_line_bytes,
                self.stats,
                truncate_long=self.limits.truncate_long_lines,
            ),
            last_growth=time.monotonic(),
        )
        self._streams[stream.seq] = stream
        self._by_ident[ident] = stream
        self._stream_changed(stream, "origin")
        self._discovery.added(stream)
        return stream
