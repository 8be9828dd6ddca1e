"""The ambassador pattern in real containers built from images/: PostgreSQL primary and
streaming-standby pods (the "outside world", TLS on) and a notes-app + db-ambassador pod
sharing one network namespace.

What a user relies on: the app's configuration names only localhost, every database
connection the app's processes hold goes to 127.0.0.1:5432 (the ambassador), and when the
database goes away the app shows the ambassador's plain error instead of hanging.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from dataclasses import dataclass

import pytest

from tests import pg
from tests.container.conftest import RUN_AS, Pod, PodContainer, Pods
from tests.in_pod import ESTABLISHED_TCP_SCRIPT, http_post_json_script, parse_http_response

PASSWORD = "container-test-password"
PGDATA_ROOT = "/var/lib/pgdata"
TLS_DIR = "/etc/podpatterns/tls"


@dataclass
class AmbassadorPods:
    db_pod: Pod
    db: PodContainer
    standby_pod: Pod
    standby: PodContainer
    app: PodContainer
    ambassador: PodContainer
    pods: Pods


def http_ready(container: PodContainer, port: int) -> bool:
    return container.running() and container.http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200


def tar_of(files: dict[str, bytes], mode: int = 0o600) -> bytes:
    """A tar archive for put_archive, its files owned by the pods' uid 10001."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(content), mode, 10001, 10001
            archive.addfile(info, io.BytesIO(content))
    return out.getvalue()


def start_pause(pod: Pod, image: str, mounts: dict[str, str]) -> PodContainer:
    """A pod's first container that only sleeps, like Kubernetes' pause container: it owns
    the network namespace (its name is the pod's address) and keeps `mounts` mounted, so
    files put into a volume stay there until the pod's real containers start (a tmpfs
    volume's content lives only while some container holds it). Hardened as Pod.start."""
    assert not pod.containers, "the pause container comes first"
    container = pod.client.containers.run(
        image, entrypoint=["sleep", "infinity"], name=f"{pod.name}-pause",
        network=pod.network, hostname=pod.name,
        volumes={volume: {"bind": path, "mode": "rw"} for volume, path in mounts.items()},
        read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"], user=RUN_AS,
        mem_limit="32m", labels={"podpatterns.test": "container-tier"}, detach=True,
    )  # fmt: skip
    pause = PodContainer(name=container.name, container=container)
    pod.containers.append(pause)
    return pause


def psql_in(db: PodContainer, sql: str) -> str:
    """Run SQL in a database container over its Unix socket, as postgres."""
    result = db.container.exec_run(["psql", "-h", "/tmp", "-U", "postgres", "-Atc", sql],
                                   user=RUN_AS, environment={"PGPASSWORD": PASSWORD})  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.output.decode().strip()


@pytest.fixture(scope="module")
def ambassador_pods(
    images: dict[str, str], pods: Pods, tmp_path_factory: pytest.TempPathFactory
) -> AmbassadorPods:
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make the test CA: apt-get install openssl")
    db_pod = pods.new("db")
    # The certificate is in place before PostgreSQL starts, as a mounted Secret would be:
    # the image's entrypoint turns TLS on from PG_TLS_CERT_FILE / PG_TLS_KEY_FILE.
    tls = db_pod.volume("tls", size="1m")
    pause = start_pause(db_pod, images["postgres"], {tls: TLS_DIR})
    standby_pod = pods.new("standby")
    standby_address = f"{standby_pod.name}-postgres"  # the name Pod.start will give it
    # The servers' certificate names both database pods as the app pod reaches them.
    pki = pg.make_pki(tmp_path_factory.mktemp("pki"), [db_pod.address, standby_address])
    pause.container.put_archive(TLS_DIR, tar_of(
        {"tls.crt": pki.server_cert.read_bytes(), "tls.key": pki.server_key.read_bytes()}
    ))  # fmt: skip
    data = db_pod.volume("pgdata", size="256m")
    db = db_pod.start(
        "postgres", images["postgres"],
        env={"POSTGRES_PASSWORD": PASSWORD, "PG_ROLE": "primary", "PG_CLUSTER_NAME": "primary",
             "PG_TLS_CERT_FILE": f"{TLS_DIR}/tls.crt", "PG_TLS_KEY_FILE": f"{TLS_DIR}/tls.key"},
        mounts={data: PGDATA_ROOT, tls: f"{TLS_DIR}:ro"}, mem_limit="512m",
    )  # fmt: skip
    pods.eventually(lambda: db.exec("pg_isready", "-h", "/tmp")[0] == 0, "PostgreSQL up", 60)
    # The standby's base backup copies the certificate and ssl = on along with the data.
    standby_data = standby_pod.volume("pgdata", size="256m")
    standby = standby_pod.start(
        "postgres", images["postgres"],
        env={"POSTGRES_PASSWORD": PASSWORD, "PG_ROLE": "standby", "PG_CLUSTER_NAME": "standby",
             "PG_PRIMARY_HOST": db_pod.address},
        mounts={standby_data: PGDATA_ROOT}, mem_limit="512m",
    )  # fmt: skip
    assert standby_pod.address == standby_address
    pods.eventually(lambda: standby.exec("pg_isready", "-h", "/tmp")[0] == 0, "standby up", 90)

    app_pod = pods.new("notes")
    ca = app_pod.volume("db-ca", size="1m")
    app = app_pod.start(
        "notes-app", images["notes-app"],
        env={"NOTES_APP_PORT": "8080", "NOTES_APP_DB_TIMEOUT": "3",
             "DATABASE_URL": "postgresql://postgres@localhost:5432/postgres",
             "PGPASSWORD": PASSWORD},
        # Mounted here only so the CA can be put in before the ambassador starts.
        mounts={ca: "/etc/podpatterns/db-ca"},
    )  # fmt: skip
    app.container.put_archive("/etc/podpatterns/db-ca",
                              tar_of({"ca.crt": pki.ca_cert.read_bytes()}, mode=0o644))  # fmt: skip
    ambassador = app_pod.start(
        "db-ambassador", images["db-ambassador"],
        env={"AMBASSADOR_LISTEN": "127.0.0.1:5432",
             "AMBASSADOR_UPSTREAMS": f"{db_pod.address}:5432,{standby_address}:5432",
             "AMBASSADOR_TLS_MODE": "verify-full",
             "AMBASSADOR_TLS_CA_FILE": "/etc/podpatterns/db-ca/ca.crt",
             "AMBASSADOR_HTTP_PORT": "9104", "AMBASSADOR_HEALTH_POLL_SECONDS": "1",
             "AMBASSADOR_HEALTH_USER": "postgres", "AMBASSADOR_HEALTH_PASSWORD": PASSWORD},
        mounts={ca: "/etc/podpatterns/db-ca:ro"},
    )  # fmt: skip
    pods.eventually(lambda: http_ready(ambassador, 9104), "the ambassador to be ready", 60)
    pods.eventually(lambda: http_ready(app, 8080), "the notes app to be ready", 60)
    return AmbassadorPods(db_pod, db, standby_pod, standby, app, ambassador, pods)


def post_note(app: PodContainer, body: str) -> tuple[int, str]:
    return parse_http_response(*app.python(
        http_post_json_script("http://127.0.0.1:8080/notes", {"body": body}, timeout=10)))


def test_the_primary_turned_tls_on_from_the_mounted_certificate(ambassador_pods):
    db = ambassador_pods.db
    assert psql_in(db, "SHOW ssl") == "on"
    # The entrypoint copied the key out of the read-only mount: owned by the server, 0600.
    code, output = db.exec("stat", "-c", "%a %u", f"{PGDATA_ROOT}/data/server.key")
    assert (code, output.strip()) == (0, "600 10001")


def test_the_app_reaches_the_database_only_through_localhost(ambassador_pods):
    app = ambassador_pods.app
    status, text = post_note(app, "stored through the ambassador")
    assert status == 201, text
    status, body = app.http_get("http://127.0.0.1:8080/db", timeout=10)
    assert status == 200, body
    served = json.loads(body)
    assert served["database_url_host"] == "localhost"
    assert served["server"] == "primary"
    exit_code, output = app.python(ESTABLISHED_TCP_SCRIPT)
    assert exit_code == 0, output
    connections = json.loads(output)
    outgoing = [c for c in connections if not c["local"].endswith(":8080")]
    assert outgoing, "the app holds no database connection at all"
    assert {c["remote"] for c in outgoing} == {"127.0.0.1:5432"}, connections
    # psql from the app container, to localhost, as the lab guide shows: the ambassador.
    # (PGPASSWORD is in the container's environment, as the app uses it.)
    exit_code, output = app.exec(
        "psql", "postgresql://postgres@localhost:5432/postgres", "-Atc",
        "SELECT current_setting('cluster_name'), ssl FROM pg_stat_ssl"
        " WHERE pid = pg_backend_pid()",
    )  # fmt: skip
    assert exit_code == 0, output
    # The primary, over TLS that the ambassador verified (verify-full, the pod's DNS name).
    assert output.strip() == "primary|t"
    # The app's environment names no other database host.
    exit_code, env = app.exec("env")
    assert ambassador_pods.db_pod.address not in env


def test_the_ambassador_runs_hardened_and_reports_the_upstream(ambassador_pods):
    ambassador = ambassador_pods.ambassador
    config = ambassador.attrs()
    assert config["Config"]["User"] == "10001:10001"
    assert config["HostConfig"]["ReadonlyRootfs"] is True

    def both_known() -> dict | None:
        # Ready means one healthy upstream; the standby's role comes from its own check,
        # which may land a round later.
        status, body = ambassador.http_get("http://127.0.0.1:9104/upstreams")
        assert status == 200, body
        view = json.loads(body)
        roles = [(u["role"], u["healthy"]) for u in view["upstreams"]]
        return view if roles == [("primary", True), ("standby", True)] else None

    view = ambassador_pods.pods.eventually(both_known, "both upstreams healthy with their roles")
    assert view["active_upstream"] == f"{ambassador_pods.db_pod.address}:5432"


def test_failover_between_database_pods(ambassador_pods):
    """The primary's container stops; the standby is promoted; the app, unchanged, writes
    to it through the same localhost:5432."""
    app, pods = ambassador_pods.app, ambassador_pods.pods
    ambassador_pods.db.container.stop(timeout=10)
    code, output = ambassador_pods.standby.exec(
        "pg_ctl", "promote", "-w", "-D", f"{PGDATA_ROOT}/data"
    )
    assert code == 0, output

    def written_on_standby() -> bool:
        status, _ = post_note(app, "after the failover")
        if status != 201:
            return False
        served = json.loads(app.http_get("http://127.0.0.1:8080/db", timeout=10)[1])
        return served["server"] == "standby" and served["in_recovery"] is False

    pods.eventually(written_on_standby, "a note written on the promoted standby", 30)
    status, body = app.http_get("http://127.0.0.1:8080/notes", timeout=10)
    assert status == 200, body
    bodies = [note["body"] for note in json.loads(body)["notes"]]
    assert "stored through the ambassador" in bodies  # replicated before the failover


def test_with_the_database_gone_the_app_shows_the_ambassadors_error(ambassador_pods):
    ambassador_pods.db.container.stop(timeout=10)
    ambassador_pods.standby.container.stop(timeout=10)
    app, ambassador = ambassador_pods.app, ambassador_pods.ambassador
    ambassador_pods.pods.eventually(
        lambda: ambassador.http_get("http://127.0.0.1:9104/readyz")[0] == 503,
        "the ambassador to notice", 15,
    )  # fmt: skip
    assert ambassador.http_get("http://127.0.0.1:9104/healthz")[0] == 200
    status, body = app.http_get("http://127.0.0.1:8080/notes", timeout=20)
    assert status == 503, body
    detail = json.loads(body)["detail"]
    assert "db-ambassador: no healthy upstream" in detail
    assert "SQLSTATE 08006" in detail
