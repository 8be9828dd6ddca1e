"""The TCP ports of this machine a demo uses: free before it builds or starts anything,
and, once it runs, held by what it started.

Who holds a port: a container publishing it (`docker ps --filter publish=<port>`), else the
process whose file descriptors hold the listening socket (/proc/net/tcp and /proc/*/fd on
Linux), else `ss -ltnp` or `lsof`, else "a process this user cannot see".
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from demo.errors import DemoError

PROC = Path("/proc")
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column
WILDCARDS = ("0.0.0.0", "::")


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    inode: int


def _address(hex_address: str) -> str:
    """/proc/net/tcp{,6} addresses: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, words)


def listeners(proc: Path = PROC) -> list[Listener] | None:
    """Every listening TCP socket of this network namespace; None without /proc."""
    found: list[Listener] = []
    seen_any = False
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        seen_any = True
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != LISTEN:
                continue
            address, _, port = fields[1].partition(":")
            found.append(Listener(_address(address), int(port, 16), int(fields[9])))
    return found if seen_any else None


def _answers_for(listener: Listener, address: str) -> bool:
    """Whether a connection to `address` could land on `listener` (same address, or
    either side a wildcard, an IPv4-mapped IPv6 address counting as its IPv4 one)."""
    mine = listener.address.removeprefix("::ffff:")
    return mine == address or mine in WILDCARDS or address in WILDCARDS


def socket_inodes(pid: int, proc: Path = PROC) -> set[int]:
    inodes: set[int] = set()
    try:
        fds = list((proc / str(pid) / "fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _pids(proc: Path = PROC) -> list[int]:
    try:
        return [int(entry.name) for entry in proc.iterdir() if entry.name.isdigit()]
    except OSError:
        return []


def pids_holding(inodes: set[int], proc: Path = PROC) -> set[int]:
    """The processes this user can see that hold one of these sockets."""
    return {pid for pid in _pids(proc) if socket_inodes(pid, proc) & inodes} if inodes else set()


def session_members(leader: int, proc: Path = PROC) -> set[int]:
    """The processes of the session `leader` started (the demo starts every process in a
    session of its own, so this is the process and whatever it forked)."""
    members = {leader}
    for pid in _pids(proc):
        try:
            stat = (proc / str(pid) / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...: comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 3 and int(fields[3]) == leader:
            members.add(pid)
    return members


def command_of(pid: int, proc: Path = PROC) -> str | None:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    command = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    return command[:80] + ("..." if len(command) > 80 else "") if command else None


def held_by(port: int, address: str, pids: set[int], proc: Path = PROC) -> bool | None:
    """True when every listening socket a connection to address:port could reach is held
    by one of `pids`; False when one is not (or none listens); None when this machine
    cannot tell (no /proc)."""
    found = listeners(proc)
    if found is None:
        return None
    inodes = {entry.inode for entry in found
              if entry.port == port and _answers_for(entry, address)}
    if not inodes:
        return False
    ours: set[int] = set()
    for pid in pids:
        ours |= socket_inodes(pid, proc)
    return inodes <= ours


# --- who holds a port -----------------------------------------------------------------------


def containers_publishing(port: int) -> list[str]:
    """Names of the running containers publishing host port `port` (none without Docker)."""
    if shutil.which("docker") is None:
        return []
    try:
        result = subprocess.run(
            ["docker", "ps", "--filter", f"publish={port}", "--format", "{{.Names}}"],
            capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return result.stdout.split() if result.returncode == 0 else []


def _holder_from_proc(port: int, proc: Path) -> str | None:
    found = listeners(proc)
    if not found:
        return None
    inodes = {entry.inode for entry in found if entry.port == port}
    pids = sorted(pids_holding(inodes, proc))
    if not pids:
        return None
    return ", ".join(f"pid {pid} ({command_of(pid, proc) or '?'})" for pid in pids[:3])


def _holder_from_tools(port: int) -> str | None:
    tools = [
        (["ss", "-ltnpH", f"sport = :{port}"], re.compile(r'\("([^"]+)",pid=(\d+)')),
        (["lsof", "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fpc"], re.compile(r"p(\d+)\nc(.+)")),
    ]
    for argv, pattern in tools:
        if shutil.which(argv[0]) is None:
            continue
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10,
                                 check=False).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        match = pattern.search(out)
        if match:
            name, pid = match.groups() if argv[0] == "ss" else match.groups()[::-1]
            return f"pid {pid} ({name})"
    return None


def holder(port: int, proc: Path = PROC) -> str:
    """Who listens on `port`, in words a user can act on."""
    containers = containers_publishing(port)
    if containers:
        return f"container {', '.join(containers)} (docker ps --filter publish={port})"
    return (_holder_from_proc(port, proc) or _holder_from_tools(port)
            or "a process this user cannot see (sudo ss -ltnp)")


# --- free before anything starts ------------------------------------------------------------


def in_use(port: int, address: str = "127.0.0.1") -> bool:
    """Whether a server could not listen on address:port now: the kernel's own answer, from
    a bind with SO_REUSEADDR (as the services set it, so connections in TIME_WAIT left by
    an earlier run do not count)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as error:
            # EADDRNOTAVAIL and the like: no server could listen there either way.
            return error.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def free_port(address: str = "127.0.0.1") -> int:
    """A port no server listens on now, chosen by the kernel."""
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Port:
    port: int
    what: str  # "web-app", "log-collector HTTP", ...
    address: str = "127.0.0.1"


def check_free(ports: Iterable[Port], runtime: str,
               allowed: Mapping[int, str] | None = None) -> None:
    """Refuse to start (DemoError, one line) when a port the demo needs is in use, naming
    each such port and what holds it. `allowed`: ports held by what this demo itself left
    running and will take over (its own Compose containers), port -> why."""
    busy = [p for p in ports if p.port not in (allowed or {}) and in_use(p.port, p.address)]
    if not busy:
        return
    details = "; ".join(f"{p.address}:{p.port} ({p.what}) is held by {holder(p.port)}"
                        for p in busy)
    raise DemoError(f"the {runtime} demo needs ports that are in use: {details}. Stop what "
                    "holds them (`make demo-clean` if an earlier demo left them) and run "
                    "it again")
