"""The ambassador pattern on a real cluster: the Secrets the manifests expect (a password
and a test CA with the servers' certificate, made here, never committed), then
k8s/ambassador/kind applied with kustomize, and the promises of the container tier
(tests/container/test_ambassador_pod.py), checked with `kubectl exec` and the podman tier's
code (tests/pod_assertions.py): the app reaches the
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
from tests import pod_assertions as check
from tests.conftest import require_tool
from tests.kind.conftest import (
    Cluster,
    Deployed,
    RunningContainer,
    container_of,
    eventually,
    find,
)
from tests.pod_assertions import Exec


@dataclass
class AmbassadorOnKind:
    cluster: Cluster
    deployed: Deployed
    app: RunningContainer
    ambassador: RunningContainer

    def exec(self, where: RunningContainer) -> Exec:
        return self.cluster.exec_in(where)

    def app_get(self, path: str, timeout: float = 10.0) -> tuple[int, str]:
        return check.http_get(self.exec(self.app), f"http://127.0.0.1:{self.app_port}{path}",
                              timeout=timeout)

    def post_note(self, body: str) -> tuple[int, str]:
        return check.http_post_json(self.exec(self.app),
                                    f"http://127.0.0.1:{self.app_port}/notes", {"body": body})

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
    status, body = check.http_get(pod.exec(pod.app), f"http://localhost:{port}/upstreams")
    assert status == 200, body
    return dict(json.loads(body))


def test_the_app_reaches_the_database_only_through_localhost(ambassador_pod) -> None:
    pod = ambassador_pod
    status, text = pod.post_note("stored through the ambassador on kind")
    assert status == 201, text
    served = pod.served_by()
    assert served["database_url_host"] == "localhost"
    assert served["server"] == "primary"
    # Connections to 127.0.0.1:5432 only; psql from the app container, to localhost, as the
    # lab guide shows: the primary, over TLS the ambassador verified against the CA.
    check.assert_database_only_on_localhost(pod.exec(pod.app), pod.app_port,
                                            pod.app.env("DATABASE_URL", ""), DB_NAMESPACE)


def test_the_ambassador_knows_the_primary_and_the_standby(ambassador_pod) -> None:
    def both_known() -> dict | None:
        view = upstreams(ambassador_pod)
        return view if check.upstream_roles(view) == [("primary", True), ("standby", True)] \
            else None

    view = eventually(both_known, "both upstreams healthy with their roles", 60)
    assert view["tls_mode"] == "verify-full"
    assert view["active_upstream"].startswith(f"db-primary.{DB_NAMESPACE}.")


def test_every_container_runs_as_uid_10001_on_a_read_only_root(ambassador_pod) -> None:
    pod = ambassador_pod
    for where in (pod.app, pod.ambassador,
                  container_of(pod.cluster, pod.deployed, "db-primary"),
                  container_of(pod.cluster, pod.deployed, "db-standby")):
        check.assert_hardened(pod.exec(where), where.name)


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
    exit_code, output = pod.exec(standby)("pg_ctl", "promote", "-w", "-D", PGDATA)
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
        return view if check.only_one_healthy_primary(view) else None

    view = eventually(only_the_new_primary, "the old primary marked unhealthy", 60)
    assert view["active_upstream"].startswith(f"db-standby.{DB_NAMESPACE}.")
