"""The security lab on a real cluster: the CA Secret, the bootstrap token and the CA
bundle ConfigMap the manifests expect (a test CA, made here, never committed), then
k8s/security/kind applied with kustomize, and what only a cluster shows besides what the
container and podman tiers check: the native sidecars start in order (the renewer, then,
once its startup probe saw a certificate, the proxy, then the app), and the Service
`secure-app` serves mutual TLS to another pod with the certificates the renewer renews.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from demo.security import LIFETIME_SECONDS, NAMESPACE
from patterns.security import pki
from tests.kind.conftest import (
    Cluster,
    Deployed,
    RunningContainer,
    assert_hardened,
    container_of,
    eventually,
    find,
)
from tests.podman.test_security_podman import CLIENT_SCRIPT, CONNECT_SCRIPT

SERVICE = f"secure-app.{NAMESPACE}.svc"


@dataclass
class SecurityOnKind:
    cluster: Cluster
    deployed: Deployed
    app: RunningContainer
    renewer: RunningContainer
    proxy: RunningContainer
    issuer: RunningContainer

    def request(self, with_cert: bool = True) -> dict:
        """One request to the Service from the issuer's pod (another pod), with a client
        certificate made there from the CA (CLIENT_SCRIPT verifies the name secure-app)."""
        code, out = self.cluster.python(self.issuer.namespace, self.issuer.pod,
                                        self.issuer.name, "import sys; sys.argv = ['', "
                                        f"{SERVICE!r}, {'cert' if with_cert else 'none'!r}]\n"
                                        + CLIENT_SCRIPT)
        assert code == 0, out
        return dict(json.loads(out.strip().splitlines()[-1]))


def create_objects(cluster: Cluster, directory: Path) -> None:
    """What the demo makes from .demo/security/ (demo/security.py), from a fresh test CA."""
    ca_key, ca_cert = pki.create_ca("podpatterns kind test CA")
    (directory / "ca.key").write_bytes(pki.key_to_pem(ca_key))
    (directory / "ca.crt").write_bytes(pki.cert_to_pem(ca_cert))
    (directory / "token").write_text(secrets.token_urlsafe(24))

    def apply(*create: str) -> None:
        rendered = cluster.kubectl("create", *create, "--dry-run=client", "-o", "yaml").stdout
        cluster.kubectl("apply", "-f", "-", input=rendered)

    apply("namespace", NAMESPACE)
    apply("secret", "generic", "cert-issuer-ca", "-n", NAMESPACE,
          f"--from-file=ca.key={directory / 'ca.key'}",
          f"--from-file=ca.crt={directory / 'ca.crt'}")
    apply("secret", "generic", "bootstrap-token", "-n", NAMESPACE,
          f"--from-file=token={directory / 'token'}")
    apply("configmap", "issuer-ca", "-n", NAMESPACE, f"--from-file=ca.crt={directory / 'ca.crt'}")


@pytest.fixture(scope="module")
def lab(kind_cluster: Cluster, deploy, tmp_path_factory: pytest.TempPathFactory) -> SecurityOnKind:
    directory = tmp_path_factory.mktemp("kind-security-secrets")
    deployed: Deployed = deploy("security", prepare=lambda: create_objects(kind_cluster, directory))
    app, renewer, proxy = find(kind_cluster, deployed, "whoami-app", "cert-renewer", "tls-proxy")
    issuer = container_of(kind_cluster, deployed, "cert-issuer")
    lab = SecurityOnKind(kind_cluster, deployed, app, renewer, proxy, issuer)
    eventually(lambda: lab.request().get("status") == 200, "a request through the Service", 120)
    return lab


def _started(status: dict) -> datetime:
    running = status["state"].get("running") or {}
    assert "startedAt" in running, status
    return datetime.fromisoformat(running["startedAt"].replace("Z", "+00:00"))


def test_the_native_sidecars_start_in_order(lab: SecurityOnKind) -> None:
    pod = lab.cluster.json("-n", NAMESPACE, "get", "pod", lab.app.pod)
    init = {s["name"]: s for s in pod["status"]["initContainerStatuses"]}
    main = {s["name"]: s for s in pod["status"]["containerStatuses"]}["main"]
    assert _started(init["cert-renewer"]) <= _started(init["tls-proxy"]) <= _started(main)
    # The proxy started once the renewer's startup probe passed: a certificate was there.
    assert init["cert-renewer"]["started"] is True and init["tls-proxy"]["started"] is True


def test_every_container_is_hardened(lab: SecurityOnKind) -> None:
    for where in (lab.app, lab.renewer, lab.proxy, lab.issuer):
        assert_hardened(lab.cluster, where)


def test_the_key_is_0600_in_memory_and_absent_from_the_app(lab: SecurityOnKind) -> None:
    run_in = lab.cluster.exec_in(lab.proxy)
    assert run_in("stat", "-L", "-c", "%a %u", "/etc/tls/tls.key") == (0, "600 10001\n")
    mounts = run_in("cat", "/proc/mounts")[1].splitlines()
    assert any(line.split()[1:3] == ["/etc/tls", "tmpfs"] for line in mounts), mounts
    code, out = lab.cluster.exec_in(lab.app)("ls", "/etc/tls")
    assert code != 0 and "No such file or directory" in out


def test_another_pod_gets_through_the_service_with_mutual_tls(lab: SecurityOnKind) -> None:
    answer = lab.request()
    assert answer["status"] == 200, answer
    assert answer["body"]["client_subject"] == "CN=podman-client"  # CLIENT_SCRIPT's name
    assert answer["body"]["client_verify"] == "SUCCESS"
    assert "error" in lab.request(with_cert=False)


def test_new_handshakes_see_the_renewals(lab: SecurityOnKind) -> None:
    first = lab.request()["serial"]
    eventually(lambda: lab.request().get("serial") not in (None, first),
               "a renewed certificate on a new handshake", timeout=LIFETIME_SECONDS * 6)


def test_the_apps_port_is_unreachable_from_another_pod(lab: SecurityOnKind) -> None:
    pod = lab.cluster.json("-n", NAMESPACE, "get", "pod", lab.app.pod)
    code, out = lab.cluster.python(lab.issuer.namespace, lab.issuer.pod, lab.issuer.name,
                                   f"import sys; sys.argv = ['', {pod['status']['podIP']!r}, "
                                   "'8080']\n" + CONNECT_SCRIPT)
    assert code == 0 and out.strip() != "connected", out
