"""Finding a file's content again after it moved: the follower's searches.

A followed file's lines may go on somewhere else than under its name: in the copy a
copytruncate made (same head, at least as long as our position), under a new name after a
rename while we were down (same inode), and in generations rotated away while we were
down (named like the followed file, newer than it). These are searches of a directory;
what they find is opened and followed by the follower. Every look at a candidate's
content goes through `Access.peek`, so a planted link is never read.
"""

from __future__ import annotations

import bisect
import os
import stat
from collections.abc import Callable, Container, Iterator

from patterns.common.follower.access import Access
from patterns.common.follower.checkpoints import Checkpoint, head_hash

Ident = tuple[int, int]  # (st_dev, st_ino)
# Rotated files with these endings are compressed archives, never read as logs.
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4", ".Z")


class Listings:
    """Directory listings, each taken once when first asked for and kept, names sorted:
    a scan that finds many new files in one directory lists it once and finds the files
    named like each one by bisection, not by a pass over every name (which made a scan of
    N new files cost N squared)."""

    def __init__(self) -> None:
        self._dirs: dict[str, tuple[list[str], dict[str, os.DirEntry[str]]]] = {}

    def named_like(self, directory: str, base: str) -> list[os.DirEntry[str]]:
        """Entries of `directory` whose name starts with `base`, `base` itself excluded."""
        listing = self._dirs.get(directory)
        if listing is None:
            try:
                with os.scandir(directory) as scan:
                    entries = {entry.name: entry for entry in scan}
            except OSError:
                entries = {}
            listing = self._dirs[directory] = (sorted(entries), entries)
        names, entries = listing
        found = []
        for index in range(bisect.bisect_right(names, base), len(names)):
            if not names[index].startswith(base):
                break
            found.append(entries[names[index]])
        return found


class Locator:
    def __init__(self, access: Access) -> None:
        self.access = access

    def copy_of(
        self, path: str, head: bytes, position: int, followed: Container[Ident]
    ) -> str | None:
        """A file in `path`'s directory with our head and at least `position` bytes, not
        followed already: the copy a copytruncate made. The most recently modified wins."""
        directory = os.path.dirname(path)
        best: tuple[float, str] | None = None
        try:
            names = os.listdir(directory)
        except OSError:
            return None
        for name in names:
            candidate = os.path.join(directory, name)
            if candidate == path:
                continue
            try:
                st = os.stat(candidate, follow_symlinks=self.access.follow_symlinks)
            except OSError:
                continue
            if (
                not stat.S_ISREG(st.st_mode)
                or st.st_size < position
                or (st.st_dev, st.st_ino) in followed
            ):
                continue
            if self.access.peek(candidate, len(head)) == head and (
                best is None or st.st_mtime > best[0]
            ):
                best = (st.st_mtime, candidate)
        return None if best is None else best[1]

    def checkpointed(
        self, checkpoint: Checkpoint, followed: Container[Ident]
    ) -> tuple[str, Ident] | None:
        """Where a checkpointed file is now (path, identity): under its name, renamed (same
        inode, same head) or copied (a copytruncate while we were down: same head)."""
        for path in self._candidates(checkpoint):
            try:
                st = os.stat(path, follow_symlinks=self.access.follow_symlinks)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_size < checkpoint.offset:
                continue
            if (st.st_dev, st.st_ino) in followed:
                continue
            if self._head_matches(path, checkpoint):
                return path, (st.st_dev, st.st_ino)
        return None

    def rotated_after(
        self,
        origin: str,
        reference_ns: int,
        followed: Container[Ident],
        matches: Callable[[str], bool],
        listings: Listings | None = None,
    ) -> list[str]:
        """Files rotated away from `origin` after `reference_ns` (its checkpointed file's
        modification time) while we were down, oldest first: named like it (`app.log.1`,
        `app.log-2026…`, not compressed), newer, not followed, not matched by a glob.
        The directory is listed now, or taken from `listings` if given."""
        directory, base = os.path.split(origin)
        found: list[tuple[int, str]] = []
        for entry in (listings or Listings()).named_like(directory, base):
            if entry.name.endswith(_COMPRESSED):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            if (
                stat.S_ISREG(st.st_mode)
                and st.st_mtime_ns > reference_ns
                and (st.st_dev, st.st_ino) not in followed
                and not matches(entry.path)
            ):
                found.append((st.st_mtime_ns, entry.path))
        return [path for _, path in sorted(found)]

    def _candidates(self, checkpoint: Checkpoint) -> Iterator[str]:
        """Where the checkpointed file may be: the same inode (under its last path, or
        renamed in its directories) first, then any file there with its head (a copy; a
        fingerprint alone is weaker evidence than the inode). The directories are listed
        only if the file is not where it was: at a restart with N checkpoints, listing
        them for each one cost N squared stats."""
        ident = (checkpoint.dev, checkpoint.ino)
        same_inode: list[str] = []
        others: list[str] = []
        try:
            st = os.stat(checkpoint.path)
            if (st.st_dev, st.st_ino) == ident:
                yield checkpoint.path
            else:
                others.append(checkpoint.path)
        except OSError:
            pass
        for directory in dict.fromkeys(
            [os.path.dirname(checkpoint.path), os.path.dirname(checkpoint.origin)]
        ):
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if entry.path == checkpoint.path:
                    continue
                try:
                    dev = entry.stat(follow_symlinks=False).st_dev
                except OSError:
                    continue
                (same_inode if (dev, entry.inode()) == ident else others).append(entry.path)
        yield from same_inode
        if checkpoint.head_len:  # a copy only counts if the fingerprint covers something
            yield from others

    def _head_matches(self, path: str, checkpoint: Checkpoint) -> bool:
        head = self.access.peek(path, checkpoint.head_len)
        return (
            head is not None
            and len(head) == checkpoint.head_len
            and head_hash(head) == checkpoint.head_hash
        )
