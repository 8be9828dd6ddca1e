"""Checkpoints: how far each followed file has been durably handled.

A file is identified by device and inode plus a head fingerprint (the first bytes of the
file, hashed), so a reused inode or a file rewritten in place is not mistaken for the
one that was checkpointed.

Two files hold them, so that a commit costs what changed, not what is followed (a node
agent follows hundreds of files and commits once per batch):

- `checkpoints.json`, the base: every file's checkpoint, replaced atomically (write a
  temporary file, fsync it, rename it over the old one), so it holds either the old or
  the new state, never a torn one. Each base has a random generation.
- `checkpoints.journal`, appended to at each commit: a first line naming the base's
  generation, then one line per changed checkpoint (`{"key":K,"file":{...}}`) or dropped
  file (`{"key":K}`), written with one write() and fsynced. Loading applies its lines to
  the base of the same generation in order; a journal of another generation (the base
  was replaced after it) is ignored, and so is a torn last line (a power cut during the
  write: that commit is shipped again, never lost).

When the journal outgrows its base (and JOURNAL_MIN_BYTES) a new base is written and
the journal starts over; so does the first save of a process (keys are only meaningful
within one) and the final one at shutdown, which also removes the journal. The
directory is fsynced when a file is first created and at the final save; in between, a
power cut can at worst bring back an earlier state (lines shipped twice, never lost),
which saves a second fsync per batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from patterns.common.fsync import fsync_directory

log = logging.getLogger(__name__)

FILE_NAME = "checkpoints.json"
JOURNAL_NAME = "checkpoints.journal"
# The journal is compacted into a new base once it is larger than this and than its base:
# a commit then costs its own records plus, amortised, at most a fraction of a record.
JOURNAL_MIN_BYTES = 256 * 1024
_FORMAT_VERSION = 1
# O_NOFOLLOW: a link planted in the state directory (it must not be on the app's volume,
# but if it is) cannot redirect a write to another file.
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW


def head_hash(head: bytes) -> str:
    return hashlib.blake2b(head, digest_size=16).hexdigest()


def encode_checkpoint(checkpoint: Checkpoint) -> str:
    """One checkpoint as the JSON object the file holds (what `asdict` gives, at a
    fraction of its cost: a follower encodes one per commit)."""
    return json.dumps(
        {
            "dev": checkpoint.dev,
            "ino": checkpoint.ino,
            "offset": checkpoint.offset,
            "head_len": checkpoint.head_len,
            "head_hash": checkpoint.head_hash,
            "path": checkpoint.path,
            "origin": checkpoint.origin,
            "live": checkpoint.live,
            "mtime_ns": checkpoint.mtime_ns,
        },
        separators=(",", ":"),
    )


@dataclass(frozen=True)
class Checkpoint:
    dev: int
    ino: int
    offset: int  # bytes before this offset have been handled (acknowledged)
    head_len: int  # how many leading bytes the fingerprint covers
    head_hash: str
    path: str  # where the file was last seen (rotated files keep being searched here)
    origin: str  # the followed (glob-matched) name its lines were written under
    live: bool  # still under its followed name (False: rotated, copied or deleted)
    # Last modification seen: files rotated away after it (while we were down) are newer.
    mtime_ns: int = 0


class CheckpointStore:
    """Checkpoints of one follower, kept in `directory` (checkpoints.json and its journal).

    The follower names each file's checkpoint by a key of its own (an int, stable while
    the process runs) and passes what changed to `update`."""

    def __init__(
        self,
        directory: str | Path,
        *,
        fsync: bool = True,
        journal_min_bytes: int = JOURNAL_MIN_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME
        self.journal_path = self.directory / JOURNAL_NAME
        self.fsync = fsync
        self.journal_min_bytes = journal_min_bytes
        self.last_error: str | None = None
        self._directory_synced = False
        self._entries: dict[int, str] = {}  # key -> encoded checkpoint, what is saved
        self._generation: str | None = None  # of the base this process wrote last
        self._base_bytes = 0
        self._journal_fd = -1
        self._journal_bytes = 0
        self._compact_next = True  # the first save of a process writes a base

    # --- loading ------------------------------------------------------------------------

    def load(self) -> list[Checkpoint]:
        """The saved checkpoints; an unreadable base is set aside (and logged), so that
        one corrupted file does not stop the service."""
        try:
            raw = _read_regular(self.path)
        except FileNotFoundError:
            return []
        try:
            document = json.loads(raw)
            keys = document.get("keys", range(len(document["files"])))
            # strict: as many keys as files, else ValueError (set aside below).
            files: dict[int, dict] = dict(zip(keys, document["files"], strict=True))
            self._apply_journal(document.get("generation"), files)
            return [Checkpoint(**item) for item in files.values()]
        except (ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_name(FILE_NAME + ".corrupt")
            os.replace(self.path, aside)
            log.error(
                "checkpoint file unreadable, set aside; files will be read from the start",
                extra={"path": str(self.path), "moved_to": str(aside), "error": str(exc)},
            )
            return []

    def _apply_journal(self, generation: str | None, files: dict[int, dict]) -> None:
        """Apply the journal's records to `files`, the base of `generation`, in order. A
        bad journal never costs the base: its records from the bad one on are ignored."""
        if generation is None:
            return
        try:
            lines = _read_regular(self.journal_path).split(b"\n")
        except FileNotFoundError:
            return
        except ValueError as exc:
            log.error("checkpoint journal ignored", extra={"error": str(exc)})
            return
        # Only whole lines count: the last one, after the final newline, is b"" or torn.
        for number, line in enumerate(lines[:-1], start=1):
            try:
                record = json.loads(line)
                if number == 1:
                    if record["generation"] != generation:
                        return  # the journal of an earlier base
                elif "file" in record:
                    Checkpoint(**record["file"])  # checked here, not at the end
                    files[int(record["key"])] = record["file"]
                else:
                    files.pop(int(record["key"]), None)
            except (ValueError, KeyError, TypeError) as exc:
                log.error(
                    "checkpoint journal unreadable from here on; its later records are"
                    " ignored (their lines are read again)",
                    extra={"path": str(self.journal_path), "line": number, "error": str(exc)},
                )
                return

    # --- saving -------------------------------------------------------------------------

    def update(self, changes: dict[int, str | None], *, final: bool = False) -> None:
        """Save `changes` (key -> checkpoint encoded with `encode_checkpoint`, or None for
        a file no longer followed): appended to the journal, or a new base when one is
        due. `final` (shutdown) writes a base, removes the journal and fsyncs the
        directory: durable against a power cut too."""
        for key, entry in changes.items():
            if entry is None:
                self._entries.pop(key, None)
            else:
                self._entries[key] = entry
        records = "".join(
            f'{{"key":{key}}}\n' if entry is None else f'{{"key":{key},"file":{entry}}}\n'
            for key, entry in changes.items()
        ).encode()
        due = self._journal_bytes + len(records) > max(self.journal_min_bytes, self._base_bytes)
        try:
            if final or self._compact_next or due:
                self._write_base(final)
                self._compact_next = False
            elif records:
                self._append(records)
        except OSError as exc:
            self._compact_next = True  # the journal may lack these records now
            self.last_error = f"cannot save checkpoints in {self.directory}: {exc}"
            raise
        self.last_error = None

    def _write_base(self, final: bool) -> None:
        self._generation = os.urandom(8).hex()
        keys = ",".join(map(str, self._entries))
        data = (
            f'{{"version":{_FORMAT_VERSION},"generation":"{self._generation}",'
            f'"keys":[{keys}],"files":[{",".join(self._entries.values())}]}}'
        ).encode()
        tmp = self.path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        fd = os.open(tmp, _WRITE_FLAGS | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._base_bytes = len(data)
        # The old journal names the old generation: harmless if it stayed, but a new one
        # is started at the next append.
        if self._journal_fd >= 0:
            os.close(self._journal_fd)
            self._journal_fd = -1
        self._journal_bytes = 0
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.journal_path)
        self._sync_directory(final)

    def _append(self, records: bytes) -> None:
        if self._journal_fd < 0:
            fd = os.open(self.journal_path, _WRITE_FLAGS | os.O_TRUNC | os.O_APPEND, 0o644)
            self._journal_fd = fd
            records = f'{{"generation":"{self._generation}"}}\n'.encode() + records
        # One write: a kill leaves it whole or absent. A short one (disk full) is an
        # error: the next save writes a base instead of appending after a torn line.
        if os.write(self._journal_fd, records) != len(records):
            raise OSError(f"short write to {self.journal_path}")
        self._journal_bytes += len(records)
        if self.fsync:
            os.fdatasync(self._journal_fd)
        self._sync_directory(False)

    def _sync_directory(self, final: bool) -> None:
        if self.fsync and (final or not self._directory_synced):
            fsync_directory(self.directory)
            self._directory_synced = True

    def close(self) -> None:
        """Close the journal; a later save writes a base first."""
        if self._journal_fd >= 0:
            os.close(self._journal_fd)
            self._journal_fd = -1
        self._compact_next = True

    def check_writable(self) -> tuple[bool, str]:
        """Readiness check: the directory exists and is writable, and the last save worked."""
        if not os.access(self.directory, os.W_OK | os.X_OK):
            return False, f"checkpoint directory {self.directory} is not writable"
        if self.last_error is not None:
            return False, self.last_error
        return True, "ok"


def _read_regular(path: Path) -> bytes:
    """The content of the regular file at `path`: not through a link, and never blocking
    on a FIFO (the state directory should be the sidecar's own, but may not be)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ValueError(f"cannot open {path}: {exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(fd)
