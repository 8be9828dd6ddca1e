"""Durable directory entries, shared by every service that writes state."""

from __future__ import annotations

import os


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Make the directory's entries durable: a file created, renamed or removed in it
    survives a power cut only once its directory is fsynced, whatever was fsynced in it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
