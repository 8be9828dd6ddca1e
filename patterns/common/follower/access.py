"""What the follower may read, against an app that plants links and odd files.

The app that writes the followed files is not trusted: it can plant links to any file
the follower's user may read (`/proc/self/environ` holds the sidecar's secrets), FIFOs
that would hang a reader, or `/proc` files whose size does not describe their content.
`Access` opens a path for reading only if it is a regular file that really is where its
path says, below the directory a glob names (unless links are followed), and says why
not otherwise: each refusal is logged and counted once per path (see `REFUSALS`).
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import stat

log = logging.getLogger(__name__)

# What a refused name named: an inode is reused at once for the next file, so its type and
# change time tell a regular file written in place of a refused link from that link.
Signature = tuple[int, int, int, int]  # (st_dev, st_ino, st_mode, st_ctime_ns)

# Why a file the follower found (a glob match, a renamed or rotated file, a checkpointed
# one) is not read. Each is logged once per path and counted in `FollowerStats.files_refused`.
REFUSALS = {
    "symlink": "a symbolic link, and following links is off",
    "outside": "its real path is outside the directories the globs name",
    "not_regular": "not a regular file (a FIFO, socket, device or directory)",
    "pseudo_file": "its size does not describe its content (a /proc file): it would be"
    " read again at every look",
    "unreadable": "cannot be opened",
    "too_many_files": "max_files files are followed already",
}


def pread(fd: int, size: int, offset: int) -> bytes:
    try:
        return os.pread(fd, size, offset)
    except OSError as exc:  # e.g. EIO on a vanished network file: treat as no data
        log.warning("read failed", extra={"error": str(exc)})
        return b""


def named_directory(pattern: str) -> str:
    """The directory a glob names before its first wildcard (`/var/log/app` for
    `/var/log/app/*/*.log`): the operator's choice, inside which files must stay."""
    directory = os.path.dirname(pattern)
    while glob.has_magic(directory):
        directory = os.path.dirname(directory)
    return directory


def signature(st: os.stat_result) -> Signature:
    return (st.st_dev, st.st_ino, st.st_mode, st.st_ctime_ns)


def opened_path(fd: int, path: str) -> str:
    """Where the file open on `fd` really is, every link resolved. Asked of the descriptor
    (Linux), so nothing can be swapped between the check and the open."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}").removesuffix(" (deleted)")
    except OSError:  # no /proc (macOS): the path resolved now, a narrow race
        return os.path.realpath(path)


class Access:
    """Opens the files the follower may read; refuses (logged and counted in `counts`,
    once per path) the others."""

    def __init__(self, globs: list[str], follow_symlinks: bool, counts: dict[str, int]) -> None:
        self.follow_symlinks = follow_symlinks
        self.counts = counts
        # The directories the globs name and their real paths, resolved once at start
        # (the operator's configuration; the app must not redirect them later). Most
        # specific first.
        self._named = sorted(
            {(named_directory(p), os.path.realpath(named_directory(p))) for p in globs},
            key=lambda pair: -len(pair[0]),
        )
        # path -> (reason, what it named then): refusals are logged and counted once per
        # path; the path is looked at again when what it names changes.
        self._refused: dict[str, tuple[str, Signature | None]] = {}

    def forget_except(self, present: set[str]) -> None:
        """Forget refusals of names that are gone: memory stays bounded by what is there."""
        self._refused = {p: known for p, known in self._refused.items() if p in present}

    def open(self, path: str) -> tuple[int, os.stat_result] | None:
        """`path` opened for reading, or None: gone, or refused (logged and counted once).

        Unless links are followed, the file must be no symlink (O_NOFOLLOW) and the
        directory it really is in must be the one its path names below the glob's
        directory: no link is followed there either, so nothing outside is read. In every
        case it must be a regular file whose size describes its content."""
        follow = self.follow_symlinks
        try:
            # Looked at before it is opened: a device is never opened (that can act on it).
            st = os.stat(path, follow_symlinks=follow)
        except FileNotFoundError:
            return None  # renamed or deleted since we saw it: the events or a scan say where
        except OSError as exc:
            self.refuse(path, "unreadable", None, str(exc))
            return None
        seen = signature(st)
        if not stat.S_ISREG(st.st_mode):
            self.refuse(path, "symlink" if stat.S_ISLNK(st.st_mode) else "not_regular", seen)
            return None
        try:
            # O_NONBLOCK: a FIFO swapped in since the stat must not hang the follower.
            flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
            fd = os.open(path, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:
            reason = "symlink" if exc.errno == errno.ELOOP and not follow else "unreadable"
            self.refuse(path, reason, seen, str(exc))
            return None
        try:
            st = os.fstat(fd)
            refusal = self._refusal(fd, path, st)
        except OSError as exc:
            refusal = "unreadable"
            detail = str(exc)
        else:
            detail = ""
        if refusal is not None:
            os.close(fd)
            self.refuse(path, refusal, seen, detail)
            return None
        self._refused.pop(path, None)
        return fd, st

    def _refusal(self, fd: int, path: str, st: os.stat_result) -> str | None:
        """Why the file open on `fd` must not be read (see REFUSALS), or None."""
        if not stat.S_ISREG(st.st_mode):
            return "not_regular"
        if not self.follow_symlinks:
            expected = self.expected_real(path)
            real = opened_path(fd, path)
            if expected is None or not self._inside(real):
                return "outside"
            if os.path.dirname(real) != os.path.dirname(expected):
                return "symlink"  # a linked directory on the way, inside the volume
        # /proc files say size 0 and have content: the size would say "truncated" at
        # every look and the file would be read again without end.
        if st.st_size == 0 and pread(fd, 1, 0) and os.fstat(fd).st_size == 0:
            return "pseudo_file"
        return None

    def directories_to_watch(self, globs: list[str]) -> set[str]:
        """The directories the globs' files are in (for a directory with wildcards, those
        it matches now) that exist and, unless links are followed, are reached through no
        link: one the app planted, or the named directory replaced by one, is not watched."""
        directories: set[str] = set()
        for pattern in globs:
            parent = os.path.dirname(pattern)
            found = glob.glob(parent) if glob.has_magic(parent) else [parent]
            directories.update(
                d
                for d in found
                if os.path.isdir(d)
                and (self.follow_symlinks or os.path.realpath(d) == self.expected_real(d))
            )
        return directories

    def expected_real(self, path: str) -> str | None:
        """The real path `path` has if no link is followed below its glob's directory;
        None if it is below none of them."""
        for named, real in self._named:
            if path == named:
                return real
            prefix = named.rstrip("/") + "/"
            if path.startswith(prefix):
                return os.path.join(real, path[len(prefix) :])
        return None

    def _inside(self, real: str) -> bool:
        return any(
            real == root or real.startswith(root.rstrip("/") + "/") for _, root in self._named
        )

    def refuse(self, path: str, reason: str, seen: Signature | None, detail: str = "") -> None:
        """Do not read `path`: logged and counted once per path and reason, however often
        it is looked at again (a scan every few seconds)."""
        known = self._refused.get(path)
        self._refused[path] = (reason, seen)
        if known is not None and known[0] == reason:
            return
        self.counts[reason] += 1
        extra = {"path": path, "reason": reason, "why": REFUSALS[reason]}
        if detail:
            extra["error"] = detail
        log.warning("file refused", extra=extra)

    def refused_before(self, path: str, seen: Signature) -> bool:
        """Refused, and still the same thing: not worth opening again. A file refused for
        the count of files or its permissions is tried again at every scan."""
        known = self._refused.get(path)
        return (
            known is not None
            and known[1] == seen
            and known[0] not in ("unreadable", "too_many_files")
        )

    def peek(self, path: str, size: int) -> bytes | None:
        """The first `size` bytes of a regular file (None if it is not one we may read),
        without logging or counting: a look at a candidate copy, not a file to follow."""
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
        if not self.follow_symlinks:
            flags |= os.O_NOFOLLOW
        try:
            fd = os.open(path, flags)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if self._refusal(fd, path, st) is not None:
                return None
            return pread(fd, size, 0)
        except OSError:
            return None
        finally:
            os.close(fd)
