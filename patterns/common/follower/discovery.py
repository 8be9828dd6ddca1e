"""Discovery and rotation: which files are followed, and what became of them.

Inotify on the globs' directories reports new and renamed files as it happens (a watcher
thread handles the events whatever the consumer is doing), and a periodic full scan (the
only mechanism where inotify is unavailable) catches anything missed. A followed name
that now holds another inode means a rename rotation: the old file is read on under its
new name. Files the app created and rotated away again before we looked (we lag) are
found by their name and read from 0, oldest first, before any later file is opened. The
heads of files still shorter than the fingerprint are taken as they grow: the head is how
a truncation is told (truncation.py).

Opening and following a file is the follower's (`Open`, as in recovery.py); so are the
followed streams, which this module only looks at, and the reader's list of files it may
pass by (`wake`, `wake_all`). The follower's lock guards all of it: the follower holds
it for every call that looks at files or streams (`scan`, `handle_events`, ...), and the
watcher thread takes it before it handles events.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import select
import stat
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from patterns.common.follower import inotify, watch
from patterns.common.follower.access import Access, signature
from patterns.common.follower.locate import Listings, Locator
from patterns.common.follower.recovery import Open
from patterns.common.follower.stream import Ident, Stream
from patterns.common.follower.truncation import Truncations
from patterns.common.follower.watch import DirectoryWatch

if TYPE_CHECKING:
    from patterns.common.follower.follower import FollowerStats, Limits

log = logging.getLogger("patterns.common.follower.follower")
_DONE_KEPT = 4096  # closed files remembered (see `Discovery.done`)


class Discovery:
    def __init__(
        self,
        globs: list[str],
        limits: Limits,
        stats: FollowerStats,
        lock: threading.RLock,
        access: Access,
        locate: Locator,
        truncations: Truncations,
        *,
        streams: dict[int, Stream],
        followed: dict[Ident, Stream],
        open_file: Open,
        wake: Callable[[str], Stream | None],
        wake_all: Callable[[], None],
    ) -> None:
        self.globs = globs
        self.limits = limits
        self.stats = stats
        self._lock = lock  # the follower's
        self._access = access
        self._locate = locate
        self._truncations = truncations
        self._streams = streams  # the follower's, by seq
        self._by_ident = followed  # the follower's, by (device, inode)
        self._open = open_file
        self._wake = wake  # an event named a path: the reader looks at its file again
        self._wake_all = wake_all  # the reader looks at every file again
        # Files still shorter than the fingerprint: only they are looked at for their head.
        self._short_heads: set[int] = set()
        self.started_ns = 0  # wall clock at start: later files were written while we ran
        # Files read to their end and closed (device, inode, modification time): a search
        # for generations we missed must not read them again (the time tells a reused inode).
        self._done: dict[tuple[int, int, int], None] = {}
        self.next_scan = 0.0
        events = inotify.open_inotify() if self.limits.use_inotify else None
        self._dirs = DirectoryWatch(events) if events is not None else None
        self._watcher: threading.Thread | None = None
        self.activity = threading.Event()  # set by the watcher after anything it handles
        self._closing = threading.Event()

    # --- the follower's calls ----------------------------------------------------------------

    @property
    def uses_inotify(self) -> bool:
        return self._dirs is not None

    def start(self) -> None:
        self.started_ns = time.time_ns()
        if self._dirs is not None:
            self._watcher = threading.Thread(target=self._watch, name="follower-watch", daemon=True)
            self._watcher.start()

    def watcher_stopped(self) -> bool:
        """The watcher thread (if any) is no longer running, and not because of close()."""
        watcher = self._watcher
        return watcher is not None and not watcher.is_alive() and not self._closing.is_set()

    def stop(self) -> None:
        """Stop the watcher thread (without the follower's lock: it may be waiting for it)."""
        self._closing.set()
        if self._watcher is not None:
            self._watcher.join(2 * self.limits.poll_interval + 1)

    def close(self) -> None:
        if self._dirs is not None:
            self._dirs.close()
            self._dirs = None

    def wait(self, seconds: float) -> None:
        if self._watcher is None:
            time.sleep(seconds)
        else:
            self.activity.wait(seconds)

    def matches(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.globs)

    def reports_writes(self, directory: str) -> bool:
        """Whether the watcher thread hears of writes to files in `directory`."""
        dirs = self._dirs
        return self._watcher is not None and dirs is not None and dirs.watches(directory)

    def added(self, stream: Stream) -> None:
        """The follower follows `stream` now."""
        if self._short_head(stream):
            self._short_heads.add(stream.seq)

    def done(self, stream: Stream) -> None:
        """`stream`'s file was read to its end and closed."""
        self._done[(*stream.ident, stream.mtime_ns())] = None
        while len(self._done) > _DONE_KEPT:
            del self._done[next(iter(self._done))]

    def scan(self) -> None:
        """Look at every glob match and every followed file (the polling path, and the
        safety net behind inotify)."""
        self.next_scan = time.monotonic() + (
            self.limits.rescan_interval if self._dirs else self.limits.poll_interval
        )
        self._update_watches()
        matches: dict[Ident, str] = {}
        candidates: list[tuple[Ident, str]] = []
        seen: set[str] = set()
        for pattern in self.globs:
            for path in sorted(glob.glob(pattern)):
                try:
                    st = os.stat(path, follow_symlinks=self.limits.follow_symlinks)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    continue  # a glob may match directories: not files to read
                ident = (st.st_dev, st.st_ino)
                seen.add(path)
                if stat.S_ISREG(st.st_mode):
                    matches.setdefault(ident, path)
                if not self._access.refused_before(path, signature(st)):
                    candidates.append((ident, path))
        self._access.forget_except(seen)
        for stream in list(self._streams.values()):
            if stream.detached or stream.closed:
                continue
            matched = matches.get(stream.ident)
            if matched is not None:
                stream.path = matched
                if not stream.live and not stream.finished:
                    stream.live, stream.origin = True, matched
            elif stream.live:
                self._moved_away(stream)
        new = [path for ident, path in candidates if ident not in self._by_ident]
        # One listing of each directory for all new files, not one per file; a file
        # rotated away after it was taken, before its name was opened, is in the second.
        listings = Listings()
        # The files followed under each name, taken once: looking through every followed
        # file for each new one made a start with 1,000 files a million comparisons.
        by_origin: dict[str, list[Stream]] = {}
        for stream in self._streams.values():
            by_origin.setdefault(stream.origin, []).append(stream)
        for path in new:
            # Older than what is there now.
            self._follow_missed_generations(path, listings, by_origin.get(path, []))
            self._open(path, origin=path, live=True)
        if new:
            listings = Listings()
            for path in new:
                self._open_generations(path, listings)
        self._capture_heads()

    def handle_events(self, events: list[inotify.Event] | None = None) -> None:
        if self._dirs is None:
            return
        if events is None:
            if self._watcher is not None:
                return  # the watcher thread takes the events
            events = self._dirs.read_events()
        rescan = False
        for change in self._dirs.changes(events):
            path = change.path
            if change.kind == watch.RESCAN:
                rescan = True
                continue
            self._grew(path)
            if change.kind == watch.MOVED_TO:
                if change.source is not None and self.matches(change.source):
                    self._renamed(change.source, path)
                rescan = rescan or self.matches(path)
            elif change.kind == watch.CREATED:
                if self.matches(path):
                    self._follow_missed_generations(path)  # older than what is there now
                    self._open(path, origin=path, live=True)
            elif change.kind in (watch.MOVED_FROM, watch.DELETED):
                rescan = rescan or self.matches(path)
        if rescan:
            self._wake_all()
            self.scan()

    def copied_before_first_bytes(self, stream: Stream, had_head: bool) -> bool:
        """A live file followed while still empty has just shown its first bytes. If the
        app wrote, copytruncated and wrote again before we looked, no head tells the
        truncation: its copy, named like the file, is the only trace, found among the
        missed generations and read first (else, after the app's last rotation, never).
        True if a file was found."""
        if had_head or not stream.head or not stream.live:
            return False
        followed = len(self._streams)
        self._follow_missed_generations(stream.origin)
        return len(self._streams) > followed

    # --- rotation ------------------------------------------------------------------------------

    def _moved_away(self, stream: Stream, new_path: str | None = None) -> None:
        try:
            deleted = os.fstat(stream.fd).st_nlink == 0
        except OSError:
            deleted = True
        stream.live = False
        stream.last_growth = time.monotonic()
        if new_path is not None:
            stream.path = new_path
        if deleted:
            self.stats.deletions += 1
        else:
            self.stats.rotations += 1
        log.info(
            "file deleted" if deleted else "file rotated",
            extra={"path": stream.origin, "now_at": stream.path},
        )
        self._follow_missed_generations(stream.origin)

    def _follow_missed_generations(
        self,
        origin: str,
        listings: Listings | None = None,
        followed: list[Stream] | None = None,
    ) -> None:
        """Files the app created under `origin` and rotated away again before we looked
        (we lag: by the time an event is handled, its name may already hold a later file):
        named like it, written since we started, neither followed nor read and closed.
        Read from 0, oldest first, before any later file is opened; else they are lost.

        A copytruncate's copy is named like the file too. If a file followed under `origin`
        was truncated and we have not noticed yet (it was rotated before we read it again),
        its copy is not a generation of its own: the truncation is handled first, and the
        copy read from our position on. Read from 0, the lines already read would come
        again, and the truncation, its copy taken, would be counted as lines lost.
        `followed`: the files followed under `origin`, if the caller has them at hand."""
        if followed is None:
            followed = [s for s in self._streams.values() if s.origin == origin]
        for stream in followed:
            if not (stream.detached or stream.finished or stream.closed):
                self._truncations.check(stream)
        self._open_generations(origin, listings)

    def _open_generations(self, origin: str, listings: Listings | None = None) -> None:
        """Open the generations of `origin` found in its directory (listed now, or in
        `listings`): read from 0, oldest first."""
        for path in self._locate.rotated_after(
            origin, self.started_ns - 1, self._by_ident, self.matches, listings
        ):
            try:
                st = os.stat(path, follow_symlinks=self.limits.follow_symlinks)
            except OSError:
                continue
            if (st.st_dev, st.st_ino, st.st_mtime_ns) in self._done:
                continue
            if self._open(path, origin=origin, live=False) is not None:
                self.stats.rotations += 1
                log.info(
                    "file created and rotated away between two looks: reading it from the start",
                    extra={"path": path, "origin": origin},
                )

    def _renamed(self, source: str, target: str) -> None:
        """A followed name was renamed to `target`. If we had not opened that file yet
        (created and rotated between two looks), follow it now under its new name."""
        try:
            st = os.stat(target, follow_symlinks=self.limits.follow_symlinks)
        except OSError:
            return
        stream = self._by_ident.get((st.st_dev, st.st_ino))
        if stream is None:
            if self.matches(target):
                self._open(target, origin=source, live=True)
            else:  # `target` and the generations rotated before it, oldest first
                self._follow_missed_generations(source)
                unseen = (st.st_dev, st.st_ino) not in self._by_ident  # not named like it
                if unseen and self._open(target, origin=source, live=False) is not None:
                    self.stats.rotations += 1
        elif self.matches(target):
            stream.path = stream.origin = target
        elif stream.live:
            self._moved_away(stream, target)
        else:
            stream.path = target

    # --- heads ---------------------------------------------------------------------------------

    def _grew(self, path: str) -> None:
        """An event named `path`: read it again, and take its head if still short."""
        stream = self._wake(path)
        if stream is None:
            return
        if stream.seq in self._short_heads:
            if not self._short_head(stream):
                self._short_heads.discard(stream.seq)
            else:
                self._take_head(stream)

    def _capture_heads(self) -> None:
        """Take the head of files that are still shorter than the fingerprint as soon as
        they grow, not only when they are read: if the reader lags and a file is
        copytruncated before its first read, the head is what finds the copy."""
        for seq in list(self._short_heads):
            stream = self._streams.get(seq)
            if stream is None or not self._short_head(stream):
                self._short_heads.discard(seq)  # no longer short: it never is again
            else:
                self._take_head(stream)

    def _take_head(self, stream: Stream) -> None:
        """Extend the head of a file still shorter than the fingerprint (a truncation
        shows in it), or take its first bytes."""
        had_head = bool(stream.head)
        if not self._truncations.head_intact(stream):
            self._truncations.handle(stream)
        else:
            self.copied_before_first_bytes(stream, had_head)

    def _short_head(self, stream: Stream) -> bool:
        return len(stream.head) < self.limits.fingerprint_bytes and not (
            stream.detached or stream.finished or stream.closed
        )

    # --- inotify -------------------------------------------------------------------------------

    def _update_watches(self) -> None:
        if self._dirs is not None:
            self._dirs.watch(self._access.directories_to_watch(self.globs))

    def _watch(self) -> None:
        """The watcher thread: handle inotify events as they come, whatever the consumer
        is doing (busy, or blocked because its destination is down). A file that lives
        for milliseconds is opened and its head taken within the time of one read."""
        while not self._closing.is_set():
            dirs = self._dirs
            if dirs is None:
                return
            try:
                ready, _, _ = select.select([dirs.fileno()], [], [], self.limits.poll_interval)
            except (OSError, ValueError):
                return
            if self._closing.is_set():
                return
            try:
                self._handle_watched(dirs, dirs.read_events() if ready else [])
            except Exception:  # keep watching: the periodic scan repairs what was missed
                log.exception("handling file events failed")
                time.sleep(self.limits.poll_interval)
            self.activity.set()

    def _handle_watched(self, dirs: DirectoryWatch, events: list[inotify.Event]) -> None:
        if dirs.growth_only(events):
            # Growth only (the common case at high rates): the reader is woken for the
            # files that grew, whose heads are taken if still shorter than the fingerprint.
            with self._lock:
                for change in dirs.changes(events):
                    self._grew(change.path)
        elif events or time.monotonic() >= self.next_scan:
            with self._lock:
                self.handle_events(events)
                if time.monotonic() >= self.next_scan:
                    self.scan()
