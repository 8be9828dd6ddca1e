"""Real PostgreSQL 15 clusters in temporary directories, for the ambassador's tests and its
local demo: a primary, a streaming-replication standby (pg_basebackup -R), TLS from a CA
generated with the openssl CLI, password authentication (SCRAM-SHA-256).

PostgreSQL refuses to run as root, so as root (CI, containers) every server command runs
as `nobody` through runuser, in a directory that user owns. No pytest here: the demo uses
the same code.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "postgres"
RUN_AS = "nobody"  # only when we are root


def missing_prerequisite() -> str | None:
    """Why clusters cannot be started here, or None."""
    for tool in ("initdb", "pg_ctl", "pg_basebackup", "postgres"):
        if not (PG_BIN / tool).exists():
            return f"needs PostgreSQL 15 server binaries in {PG_BIN}: apt-get install postgresql-15"
    if shutil.which("openssl") is None:
        return "needs openssl: apt-get install openssl"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "needs runuser (util-linux) to run PostgreSQL as a non-root user"
    return None


def _owner() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(RUN_AS)
    return entry.pw_uid, entry.pw_gid


def _chown(path: Path) -> None:
    owner = _owner()
    if owner is not None:
        os.chown(path, *owner)


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", RUN_AS, "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> None:
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr}")


def make_workdir(prefix: str = "podpatterns-pg-") -> Path:
    """A directory the server user can own (pytest's tmp dirs are root-only)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    _chown(path)
    return path


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_pki(directory: Path, names: list[str], ca_name: str = "podpatterns demo CA") -> Pki:
    """A CA and a server certificate for `names` (DNS names or IP addresses), EC P-256."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run(
        ["openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_cert),
         "-days", "30", "-subj", f"/CN={ca_name}",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    )  # fmt: skip
    _run(["openssl", "req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj",
          f"/CN={names[0]}"])  # fmt: skip
    sans = ",".join(
        f"IP:{name}" if name.replace(".", "").isdigit() or ":" in name else f"DNS:{name}"
        for name in names
    )
    extensions = directory / "server.ext"
    extensions.write_text(
        f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n"
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", "30", "-extfile", str(extensions)]
    )  # fmt: skip
    return Pki(ca_cert, cert, key)


class Cluster:
    """One PostgreSQL server on 127.0.0.1:<port>, data in <workdir>/<name>."""

    def __init__(self, workdir: Path, name: str, port: int, password: str) -> None:
        self.workdir = workdir
        self.name = name
        self.port = port
        self.password = password
        self.data = workdir / name
        self.log = workdir / f"{name}.log"

    def dsn(self, **extra: str) -> str:
        params = {
            "host": "127.0.0.1", "port": str(self.port), "user": SUPERUSER,
            "password": self.password, "dbname": "postgres", "sslmode": "disable",
            "connect_timeout": "5", **extra,
        }  # fmt: skip
        return " ".join(f"{key}={value}" for key, value in params.items())

    def _pg(self, tool: str, *args: str, env: dict[str, str] | None = None) -> None:
        _run(_as_server_user([str(PG_BIN / tool), *args]), env=env)

    def _configure(self, pki: Pki | None) -> None:
        settings = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"cluster_name = '{self.name}'",  # what the notes app's /db shows
            f"unix_socket_directories = '{self.data}'",
            # Test and demo data is disposable: trade durability for speed.
            "fsync = off", "synchronous_commit = off", "full_page_writes = off",
            "max_connections = 200", "shared_buffers = 32MB",
            "wal_level = replica", "max_wal_senders = 5", "hot_standby = on",
            "password_encryption = 'scram-sha-256'",
        ]  # fmt: skip
        if pki is not None:
            for source, target in ((pki.server_cert, "server.crt"), (pki.server_key, "server.key")):
                shutil.copy(source, self.data / target)
                (self.data / target).chmod(0o600)
                _chown(self.data / target)
            settings += ["ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'"]
        # A later line wins, so this also overrides what a base backup copied.
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# podpatterns\n" + "\n".join(settings) + "\n")

    def init(self, pki: Pki | None = None) -> Cluster:
        pwfile = self.workdir / f"{self.name}.pw"
        pwfile.write_text(self.password + "\n")
        _chown(pwfile)
        self._pg(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=scram-sha-256",
            f"--pwfile={pwfile}", "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        pwfile.unlink()
        self._configure(pki)
        return self

    def init_standby_of(self, primary: Cluster, pki: Pki | None = None) -> Cluster:
        """A streaming-replication copy of `primary` (pg_basebackup -R writes
        standby.signal and the connection settings)."""
        self._pg(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", SUPERUSER,
            "-D", str(self.data), "-R", "-X", "stream", "-c", "fast", "--no-sync",
            env={"PGPASSWORD": primary.password, "PGSSLMODE": "disable"},
        )  # fmt: skip
        self._configure(pki)
        return self

    def start(self) -> Cluster:
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def promote(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "promote")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def server_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def prepend_hba(cluster: Cluster, lines: list[str]) -> None:
    """Rules that win over initdb's (pg_hba.conf is first-match); reload if running."""
    hba = cluster.data / "pg_hba.conf"
    hba.write_text("\n".join(lines) + "\n" + hba.read_text())
    if cluster.running():
        cluster._pg("pg_ctl", "-D", str(cluster.data), "reload")
