"""The ambassador pattern's manifests (k8s/ambassador) played by podman, with the Secrets
the kind tier creates (a password and a test CA with the servers' certificate, made here,
never committed): the app reaches the database only through localhost:5432, over TLS the
ambassador verified; the ambassador knows which server is the primary, by the Service
names of the manifests; and when the primary's pod stops and the standby is promoted,
the unchanged app writes to the new primary.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from demo import podman as pm
from demo.ambassador import DB_NAMESPACE, PGDATA, SERVER_NAMES
from tests import pg
from tests import pod_assertions as check
from tests.conftest import require_tool
from tests.podman.conftest import PlayedPattern, Running, eventually


@dataclass
class AmbassadorOnPodman:
    played: PlayedPattern
    app: Running
    ambassador: Running

    @property
    def app_url(self) -> str:
        return f"http://127.0.0.1:{self.app.env('NOTES_APP_PORT', '8080')}"

    def post_note(self, body: str) -> tuple[int, str]:
        return check.http_post_json(self.app.exec, f"{self.app_url}/notes", {"body": body})

    def served_by(self) -> dict:
        status, body = check.http_get(self.app.exec, f"{self.app_url}/db", timeout=10)
        assert status == 200, body
        return dict(json.loads(body))

    def upstreams(self) -> dict:
        """The ambassador's /upstreams, fetched from the APP container: on its localhost."""
        port = self.ambassador.env("AMBASSADOR_HTTP_PORT", "9104")
        status, body = check.http_get(self.app.exec, f"http://localhost:{port}/upstreams")
        assert status == 200, body
        return dict(json.loads(body))


@pytest.fixture(scope="module")
def ambassador_pod(play: Callable[..., PlayedPattern],
                   tmp_path_factory: pytest.TempPathFactory) -> AmbassadorOnPodman:
    require_tool("openssl", "apt-get install openssl")
    directory = tmp_path_factory.mktemp("podman-db-secrets")
    (directory / "password").write_text(secrets.token_urlsafe(24))
    pki = pg.make_pki(directory / "pki", SERVER_NAMES, ca_name="podpatterns podman test CA")
    played = play("ambassador", secrets=pm.ambassador_secrets(
        directory / "password", pki.ca_cert, pki.server_cert, pki.server_key))
    app, ambassador = played.find("notes-app", "db-ambassador")
    return AmbassadorOnPodman(played, app, ambassador)


def test_the_app_reaches_the_database_only_through_localhost(ambassador_pod) -> None:
    pod = ambassador_pod
    status, text = pod.post_note("stored through the ambassador on podman")
    assert status == 201, text
    served = pod.served_by()
    assert served["database_url_host"] == "localhost"
    assert served["server"] == "primary"
    check.assert_database_only_on_localhost(pod.app.exec, pod.app.env("NOTES_APP_PORT", "8080"),
                                            pod.app.env("DATABASE_URL", ""), DB_NAMESPACE)


def test_the_ambassador_knows_the_primary_and_the_standby(ambassador_pod) -> None:
    def both_known() -> dict | None:
        view = ambassador_pod.upstreams()
        return view if check.upstream_roles(view) == [("primary", True), ("standby", True)] \
            else None

    view = eventually(both_known, "both upstreams healthy with their roles", 60)
    assert view["tls_mode"] == "verify-full"
    assert view["active_upstream"].startswith(f"db-primary.{DB_NAMESPACE}.")


def test_every_container_runs_as_uid_10001_on_a_read_only_root(ambassador_pod) -> None:
    pod = ambassador_pod
    for where in (pod.app, pod.ambassador, pod.played.first_container("db-primary"),
                  pod.played.first_container("db-standby")):
        check.assert_hardened(where.exec, where.name)


def test_failover_to_the_promoted_standby_with_the_app_unchanged(ambassador_pod) -> None:
    """Last in the module: it takes the primary away, as `make ambassador-failover` does:
    the primary's pod stops (given its grace period), the standby is promoted."""
    pod = ambassador_pod
    status, text = pod.post_note("written before the failover")
    assert status == 201, text
    primary = pod.played.plan.pod("db-primary")
    pm.podman("pod", "stop", "--time", str(primary.grace_seconds), primary.pod,
              timeout=primary.grace_seconds + 60)
    # The image's STOPSIGNAL: a fast shutdown, which ends the app's sessions at once and
    # sends the standby the WAL up to its last checkpoint, not a smart one waiting for
    # them until the grace period ends in SIGKILL.
    stopped = pm.logs(pod.played.first_container("db-primary").name)
    assert "received fast shutdown request" in stopped, stopped[-2000:]
    standby = pod.played.first_container("db-standby")
    exit_code, output = standby.exec("pg_ctl", "promote", "-w", "-D", PGDATA)
    assert exit_code == 0, output

    def written_on_the_new_primary() -> bool:
        status, _ = pod.post_note("after the failover")
        if status != 201:
            return False
        served = pod.served_by()
        return served["server"] == "standby" and served["in_recovery"] is False

    eventually(written_on_the_new_primary, "a note written on the promoted standby", 60)
    status, body = check.http_get(pod.app.exec, f"{pod.app_url}/notes", timeout=10)
    assert status == 200, body
    bodies = [note["body"] for note in json.loads(body)["notes"]]
    assert "written before the failover" in bodies  # replicated before the primary went

    def only_the_new_primary() -> dict | None:
        # The old primary's address answers no more: its checks fail (refused, or after
        # AMBASSADOR_HEALTH_TIMEOUTS timeouts).
        view = pod.upstreams()
        return view if check.only_one_healthy_primary(view) else None

    view = eventually(only_the_new_primary, "the old primary marked unhealthy", 60)
    assert view["active_upstream"].startswith(f"db-standby.{DB_NAMESPACE}.")
