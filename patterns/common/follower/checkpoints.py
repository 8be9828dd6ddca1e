"""Checkpoints: how far each followed file has been durably handled.

A file is identified by device and inode plus a head fingerprint (the first bytes of the
file, hashed), so a reused inode or a file rewritten in place is not mistaken for the
one that was checkpointed. All checkpoints live in one JSON file that is replaced
atomically (write a temporary file, fsync it, rename it over the old one): after a SIGKILL
or a power cut the file holds either the old or the new state, never a torn one. The
directory is fsynced when the file is first created and at close; in between, a power
cut can at worst bring back the previous state (lines shipped twice, never lost), which
saves a second fsync per batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "checkpoints.json"
_FORMAT_VERSION = 1


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
    """Checkpoints of one follower, kept in `directory`/checkpoints.json."""

    def __init__(self, directory: str | Path, *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME
        self.fsync = fsync
        self.last_error: str | None = None
        self._directory_synced = False

    def load(self) -> list[Checkpoint]:
        """The saved checkpoints; an unreadable file is set aside (and logged), so that
        one corrupted file does not stop the service."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            document = json.loads(raw)
            return [Checkpoint(**item) for item in document["files"]]
        except (ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_name(FILE_NAME + ".corrupt")
            os.replace(self.path, aside)
            log.error(
                "checkpoint file unreadable, set aside; files will be read from the start",
                extra={"path": str(self.path), "moved_to": str(aside), "error": str(exc)},
            )
            return []

    def save(self, checkpoints: list[Checkpoint], *, sync_directory: bool = False) -> None:
        entries = [encode_checkpoint(c) for c in checkpoints]
        self.save_entries(entries, sync_directory=sync_directory)

    def save_entries(self, entries: list[str], *, sync_directory: bool = False) -> None:
        """Save checkpoints already encoded with `encode_checkpoint` (a follower keeps
        each file's encoding until that file changes)."""
        data = f'{{"version":{_FORMAT_VERSION},"files":[{",".join(entries)}]}}'.encode()
        tmp = self.path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        try:
            # O_NOFOLLOW: a link planted in the state directory (it must not be on the
            # app's volume, but if it is) cannot redirect the write to another file.
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(tmp, flags, 0o644)
            try:
                os.write(fd, data)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            if self.fsync and (sync_directory or not self._directory_synced):
                dir_fd = os.open(self.directory, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
                self._directory_synced = True
        except OSError as exc:
            self.last_error = f"cannot save checkpoints in {self.directory}: {exc}"
            raise
        self.last_error = None

    def check_writable(self) -> tuple[bool, str]:
        """Readiness check: the directory exists and is writable, and the last save worked."""
        if not os.access(self.directory, os.W_OK | os.X_OK):
            return False, f"checkpoint directory {self.directory} is not writable"
        if self.last_error is not None:
            return False, self.last_error
        return True, "ok"
