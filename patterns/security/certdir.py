"""The shared certificate directory: generations switched atomically (standard library only).

The cert-renewer writes, the tls-proxy reads; the proxy's image has no `cryptography`, so
this module imports only the standard library. The layout is the one Kubernetes gives
projected volumes (its AtomicWriter), so a reader never sees a key of one generation with
the certificate of another, nor a half-written file:

    <cert dir>/..2026_12_02_01_59_00.123456_<serial>/   a generation: tls.key, tls.crt, ca.crt
    <cert dir>/..data -> ..2026_12_02_...               the current generation (a symlink)
    <cert dir>/tls.key -> ..data/tls.key                made once; likewise tls.crt, ca.crt

`write_generation` writes a new generation directory (each file fsynced, the key 0600 or
0640), fsyncs it, then replaces `..data` by renaming a temporary symlink over it (one
atomic step), and removes older generations but the one just replaced, so a reader that
resolved `..data` just before the switch still opens its files.

Readers call `read_generation(cert_dir)`: it resolves `..data` once and returns the paths
of the three files inside that one generation directory (`Generation.key_path`,
`.cert_path`, `.ca_path`; it unpacks as `key_path, cert_path, ca_path`), or raises
`NoGeneration`. Load the key and the certificate through those paths, never through
`<cert dir>/tls.key`, which follows `..data` again at every open. `Generation.name`
changes exactly when a new generation is switched in: poll it to know when to reload.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from patterns.common.fsync import fsync_directory

DATA_LINK = "..data"
KEY_FILE = "tls.key"
CERT_FILE = "tls.crt"
CA_FILE = "ca.crt"
FILES = (KEY_FILE, CERT_FILE, CA_FILE)
# The generation's public files; the key gets KEY_MODE or KEY_MODE_GROUP.
PUBLIC_MODE = 0o644
KEY_MODE = 0o600
KEY_MODE_GROUP = 0o640
DIR_MODE = 0o755
_TMP_LINK = ".data_tmp"
# What new_generation_name makes; nothing else in the directory is taken for a generation.
_GENERATION = re.compile(r"\.\.\d{4}(?:_\d\d){5}\.\d{6}_[0-9a-f]{1,40}")


class NoGeneration(Exception):
    """The directory holds no complete generation (yet)."""


@dataclass(frozen=True)
class Generation:
    """One generation's files, all in the same directory (`..data` resolved once)."""

    name: str  # the generation directory's name, e.g. "..2026_12_02_01_59_00.123456_3fa2"
    directory: Path

    @property
    def key_path(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def cert_path(self) -> Path:
        return self.directory / CERT_FILE

    @property
    def ca_path(self) -> Path:
        return self.directory / CA_FILE

    def __iter__(self) -> Iterator[Path]:
        """`key_path, cert_path, ca_path = read_generation(cert_dir)`."""
        return iter((self.key_path, self.cert_path, self.ca_path))

    def read(self) -> tuple[bytes, bytes, bytes]:
        """The three files' bytes (key, certificate chain, CA), all of this generation.
        OSError if the generation was removed meanwhile (two switches since it was
        resolved): read the current one again."""
        return self.key_path.read_bytes(), self.cert_path.read_bytes(), self.ca_path.read_bytes()


def current_name(cert_dir: str | os.PathLike[str]) -> str | None:
    """The current generation's directory name, None if there is none: cheap to poll."""
    try:
        target = os.readlink(Path(cert_dir) / DATA_LINK)
    except OSError:
        return None
    return _generation_name(target)


def _generation_name(target: str) -> str | None:
    # Only a sibling named like a generation is one: a link pointing anywhere else (made
    # by someone else) is not followed.
    return target if _GENERATION.fullmatch(target) else None


def read_generation(cert_dir: str | os.PathLike[str]) -> Generation:
    """The current generation (`..data` resolved once). Raises NoGeneration."""
    name = current_name(cert_dir)
    while True:
        if name is None:
            raise NoGeneration(f"{cert_dir}: no {DATA_LINK} generation yet")
        directory = Path(cert_dir) / name
        if not directory.is_symlink() and directory.is_dir():
            return Generation(name=name, directory=directory)
        # Two switches between reading the link and looking at its target remove the
        # target: a generation that is no longer current is not an error, the new one is
        # read instead. The same name twice is a broken link.
        now = current_name(cert_dir)
        if now == name:
            raise NoGeneration(f"{directory}: not a generation directory")
        name = now


def new_generation_name(serial: str, now: float | None = None) -> str:
    """"..<UTC timestamp with microseconds>_<serial>": sorts by time, unique per certificate."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime(now))
    micros = int((now % 1) * 1_000_000)
    safe_serial = "".join(c for c in serial.lower() if c in "0123456789abcdef")[:40] or "0"
    return f"..{stamp}.{micros:06d}_{safe_serial}"


def write_generation(
    cert_dir: str | os.PathLike[str],
    key_pem: bytes,
    cert_pem: bytes,
    ca_pem: bytes,
    serial: str,
    *,
    key_group_readable: bool = False,
) -> Generation:
    """Write a new generation and switch `..data` to it atomically; returns it. The old
    generation stays until the next switch; any older one is removed."""
    base = Path(cert_dir)
    base.mkdir(parents=True, exist_ok=True)
    previous = current_name(base)
    name = new_generation_name(serial)
    directory = base / name
    os.mkdir(directory, DIR_MODE)
    os.chmod(directory, DIR_MODE)  # whatever the umask
    try:
        key_mode = KEY_MODE_GROUP if key_group_readable else KEY_MODE
        _write_file(directory / KEY_FILE, key_pem, key_mode)
        _write_file(directory / CERT_FILE, cert_pem, PUBLIC_MODE)
        _write_file(directory / CA_FILE, ca_pem, PUBLIC_MODE)
        fsync_directory(directory)
    except BaseException:
        _remove_generation(directory)
        raise
    tmp_link = base / _TMP_LINK
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_link)
        os.symlink(name, tmp_link)
        os.replace(tmp_link, base / DATA_LINK)  # the switch: one rename
    except BaseException:
        _remove_generation(directory)  # a failed switch leaves nothing behind to pile up
        raise
    _ensure_file_links(base)
    fsync_directory(base)
    for entry in os.listdir(base):
        if entry not in (name, previous) and _generation_name(entry) == entry:
            _remove_generation(base / entry)
    return Generation(name=name, directory=directory)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask does not decide a key's mode
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_file_links(base: Path) -> None:
    """tls.key -> ..data/tls.key (and the others), made once; a file of that name that is
    something else is replaced by the link (atomically)."""
    for file in FILES:
        link = base / file
        target = f"{DATA_LINK}/{file}"
        try:
            if os.readlink(link) == target:
                continue
        except OSError:
            pass
        tmp = base / f".{file}_tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(target, tmp)
        try:
            os.replace(tmp, link)
        except IsADirectoryError:
            os.unlink(tmp)
            raise


def _remove_generation(directory: Path) -> None:
    """Remove a generation directory and its files; never follows a symlink."""
    if directory.is_symlink():
        directory.unlink()
        return
    if not directory.is_dir():
        return
    for entry in os.listdir(directory):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            os.unlink(directory / entry)
    with contextlib.suppress(OSError):
        os.rmdir(directory)
