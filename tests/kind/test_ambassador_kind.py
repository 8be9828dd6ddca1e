"""The ambassador pattern on a real cluster: the Secrets the manifests expect (a password
and a test CA with the servers' certificate, made here, never committed), then
k8s/ambassador/kind applied with kustomize, and the promises of the container tier
(tests/container/test_ambassador_pod.py), checked with `kubectl exec`: the app reaches the
database only through localhost:5432, over TLS that the ambassador verified; the ambassador
knows which server is the primary; and when the primary's Deployment is scaled to zero and
the standby promoted, the unchanged app writes to the new primary.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import pytest

from demo.ambassador import APP_NAMESPACE, DB_NAMESPACE, PGDATA, SERVER_NAMES
from tests import pg
from tests.conftest import require_tool
from tests.in_pod import ESTABLISHED_TCP_SCRIPT, http_post_json_script, parse_http_response
from tests.kind.conftest import (
    Cluster,
    Deployed,
    RunningContainer,
    assert_hardened,
    container_of,
    eventually,
    find,
)


@dataclass
class AmbassadorOnKind:
    cluster: Cluster
    deployed: Deployed
    app: RunningContainer
    ambassador: RunningContainer

    def app_get(self, path: str, timeout: float = 10.0) -> tuple[int, str]:
        return self.cluster.http_get(self.app.namespace, self.app.pod, self.app.name,
                                     f"http://127.0.0.1:{self.app_port}{path}", timeout=timeout)

    def post_note(self, body: str) -> tuple[int, str]:
        script = http_post_json_script(f"http://127.0.0.1:{self.app_port}/notes",
                                       {"body": body}, timeout=10)
        return parse_http_response(*self.cluster.python(self.app.namespace, self.app.pod,
                                                        self.app.name, script))

    @property
    def app_port(self) -> str:
        return self.app.env("NOTES_APP_PORT", "8080")

    def served_by(self) -> dict:
        status, body = self.app_get("/db")
        assert status == 200, body
        return dict(json.loads(body))


def apply_generated(cluster: Cluster, *create: str) -> None:
    """`kubectl create ...` rendered client-side, then applied: safe to repeat."""
    rendered = cluster.kubectl("create", *create, "--dry-run=client", "-o", "yaml").stdout
    cluster.kubectl("apply", "-f", "-", input=rendered)


def create_secrets(cluster: Cluster, directory: Path) -> None:
    """What the demo makes from .demo/ambassador/ (demo/ambassador.py), made here from a
    fresh password and test CA."""
    password = directory / "password"
    password.write_text(secrets.token_urlsafe(24))
    pki = pg.make_pki(directory / "pki", SERVER_NAMES, ca_name="podpatterns kind test CA")
    for namespace in (DB_NAMESPACE, APP_NAMESPACE):
        apply_generated(cluster, "namespace", namespace)
        apply_generated(cluster, "secret", "generic", "db-credentials", "-n", namespace,
                        f"--from-file=password={password}")
    apply_generated(cluster, "secret", "generic", "db-tls", "-n", DB_NAMESPACE,
                    f"--from-file=tls.crt={pki.server_cert}",
                    f"--from-file=tls.key={pki.server_key}")
    apply_generated(cluster, "secret", "generic", "db-ca", "-n", APP_NAMESPACE,
                    f"--from-file=ca.crt={pki.ca_cert}")


@pytest.fixture(scope="module")
def ambassador_pod(kind_cluster: Cluster, deploy,
                   tmp_path_factory: pytest.TempPathFactory) -> AmbassadorOnKind:
    require_tool("openssl", "apt-get install openssl")
    secrets_dir = tmp_path_factory.mktemp("kind-db-secrets")
    deployed: Deployed = deploy("ambassador",
                                prepare=lambda: create_secrets(kind_cluster, secrets_dir))
    app, ambassador = find(kind_cluster, deployed, "notes-app", "db-ambassador")
    pod = AmbassadorOnKind(kind_cluster, deployed, app, ambassador)
    eventually(lambda: pod.app_get("/readyz")[0] == 200, "the notes app to be ready", 120)
    return pod


def upstreams(pod: AmbassadorOnKind) -> dict:
    """The ambassador's /upstreams, fetched from the APP container: on its localhost."""
    port = pod.ambassador.env("AMBASSADOR_HTTP_PORT", "9104")
    status, body = pod.cluster.http_get(pod.app.namespace, pod.app.pod, pod.app.name,
                                        f"http://localhost:{port}/upstreams")
    assert status == 200, body
    return dict(json.loads(body))


def test_the_app_reaches_the_database_only_through_localhost(ambassador_pod) -> None:
    pod = ambassador_pod
    status, text = pod.post_note("stored through the ambassador on kind")
    assert status == 201, text
    served = pod.served_by()
    assert served["database_url_host"] == "localhost"
    assert served["server"] == "primary"
    exit_code, output = pod.cluster.python(pod.app.namespace, pod.app.pod, pod.app.name,
                                           ESTABLISHED_TCP_SCRIPT)
    assert exit_code == 0, output
    connections = json.loads(output)
    outgoing = [c for c in connections if not c["local"].endswith(f":{pod.app_port}")]
    assert outgoing, "the app holds no database connection at all"
    assert {c["remote"] for c in outgoing} == {"127.0.0.1:5432"}, connections
    # psql from the app container, to localhost, as the lab guide shows: the primary, over
    # TLS that the ambassador verified against the CA (PGPASSWORD comes from the Secret).
    exit_code, output = pod.cluster.exec(
        pod.app.namespace, pod.app.pod, pod.app.name,
        "psql", pod.app.env("DATABASE_URL", ""), "-Atc",
        "SELECT current_setting('cluster_name'), ssl FROM pg_stat_ssl"
        " WHERE pid = pg_backend_pid()")
    assert exit_code == 0, output
    assert output.strip().splitlines()[-1] == "primary|t", output
    exit_code, env = pod.cluster.exec(pod.app.namespace, pod.app.pod, pod.app.name, "env")
    assert exit_code == 0, env
    assert f".{DB_NAMESPACE}" not in env, "the app's environment names a database host"


def test_the_ambassador_knows_the_primary_and_the_standby(ambassador_pod) -> None:
    def both_known() -> dict | None:
        view = upstreams(ambassador_pod)
        roles = [(u["role"], u["healthy"]) for u in view["upstreams"]]
        return view if roles == [("primary", True), ("standby", True)] else None

    view = eventually(both_known, "both upstreams healthy with their roles", 60)
    assert view["tls_mode"] == "verify-full"
    assert view["active_upstream"].startswith(f"db-primary.{DB_NAMESPACE}.")


def test_every_container_runs_as_uid_10001_on_a_read_only_root(ambassador_pod) -> None:
    pod = ambassador_pod
    for where in (pod.app, pod.ambassador,
                  container_of(pod.cluster, pod.deployed, "db-primary"),
                  container_of(pod.cluster, pod.deployed, "db-standby")):
        assert_hardened(pod.cluster, where)


def test_failover_to_the_promoted_standby_with_the_app_unchanged(ambassador_pod) -> None:
    """Last in the module: it takes the primary away. The same steps as
    `make ambassador-failover` on kind."""
    pod = ambassador_pod
    cluster = pod.cluster
    status, text = pod.post_note("written before the failover")
    assert status == 201, text
    cluster.kubectl("-n", DB_NAMESPACE, "scale", "deployment/db-primary", "--replicas=0")
    cluster.kubectl("-n", DB_NAMESPACE, "wait", "--for=delete", "pod",
                    "-l", "app.kubernetes.io/name=db-primary", "--timeout=120s", check=False)
    standby = container_of(cluster, pod.deployed, "db-standby")
    exit_code, output = cluster.exec(standby.namespace, standby.pod, standby.name,
                                     "pg_ctl", "promote", "-w", "-D", PGDATA)
    assert exit_code == 0, output

    def written_on_the_new_primary() -> bool:
        status, _ = pod.post_note("after the failover")
        if status != 201:
            return False
        served = pod.served_by()
        return served["server"] == "standby" and served["in_recovery"] is False

    eventually(written_on_the_new_primary, "a note written on the promoted standby", 60)
    status, body = pod.app_get("/notes")
    assert status == 200, body
    bodies = [note["body"] for note in json.loads(body)["notes"]]
    assert "written before the failover" in bodies  # replicated before the primary went

    def only_the_new_primary() -> dict | None:
        # The old primary's Service has no endpoints left: its checks fail (refused at
        # once, or after AMBASSADOR_HEALTH_TIMEOUTS timeouts).
        view = upstreams(pod)
        healthy = [(u["upstream"], u["role"]) for u in view["upstreams"] if u["healthy"]]
        return view if len(healthy) == 1 and healthy[0][1] == "primary" else None

    view = eventually(only_the_new_primary, "the old primary marked unhealthy", 60)
    assert view["active_upstream"].startswith(f"db-standby.{DB_NAMESPACE}.")
