"""The security lab's manifests (k8s/security) played by podman, with the Secrets and the
ConfigMap the demo creates (a CA, a bootstrap token: made here, never committed): the
renewer gets its certificates from the issuer by the Service name of the manifests, the
proxy serves them with mutual TLS to a client in another pod, the key is 0600 for uid
10001 in the volume only the sidecars mount, and the app's 8080 is reachable from no
other pod and published by no host port.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

import pytest

from demo import podman as pm
from demo import security
from patterns.security import pki
from tests.podman.conftest import PlayedPattern, eventually

NAMESPACE = "podpatterns-security"
# Run in the cert-issuer container (another pod; its image has the CA's key mounted and
# the `cryptography` library): a client certificate made there with the CA, then one
# request to the proxy at argv[1] as `secure-app`, with forged identity headers.
CLIENT_SCRIPT = r"""
import http.client, json, socket, ssl, sys
from datetime import timedelta
from pathlib import Path
from patterns.security import pki
ca = Path("/var/lib/cert-issuer")
ca_key = pki.load_key((ca / "ca.key").read_bytes())
ca_cert = pki.load_cert((ca / "ca.crt").read_bytes())
key = pki.generate_key()
Path("/tmp/client.key").write_bytes(pki.key_to_pem(key))
Path("/tmp/client.crt").write_bytes(pki.cert_to_pem(
    pki.issue(ca_key, ca_cert, key.public_key(), ["podman-client"], timedelta(minutes=5))))
context = ssl.create_default_context(cafile=str(ca / "ca.crt"))
if sys.argv[2] == "cert":
    context.load_cert_chain("/tmp/client.crt", "/tmp/client.key")
# The pod's address, verified as the name its certificate has: `secure-app`.
conn = http.client.HTTPConnection(sys.argv[1], 8443, timeout=5)
try:
    conn.sock = context.wrap_socket(socket.create_connection((sys.argv[1], 8443), 5),
                                    server_hostname="secure-app")
    conn.request("GET", "/", headers={"X-Client-Subject": "CN=forged",
                                      "X-Client-Verify": "SUCCESS"})
    reply = conn.getresponse()
    print(json.dumps({"status": reply.status, "body": json.loads(reply.read()),
                      "serial": conn.sock.getpeercert()["serialNumber"].lower()}))
except (OSError, ssl.SSLError, http.client.HTTPException) as error:
    print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
"""
CONNECT_SCRIPT = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("connected")
except OSError as error:
    print(type(error).__name__)
"""


def lab_documents() -> list[dict]:
    ca_key, ca_cert = pki.create_ca("podman test CA")
    ca = {"ca.key": pki.key_to_pem(ca_key), "ca.crt": pki.cert_to_pem(ca_cert)}
    return [
        pm.secret_document("cert-issuer-ca", NAMESPACE, ca),
        pm.secret_document("bootstrap-token", NAMESPACE,
                           {"token": secrets.token_urlsafe(24).encode()}),
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "issuer-ca", "namespace": NAMESPACE},
         "data": {"ca.crt": ca["ca.crt"].decode()}},
    ]


@pytest.fixture(scope="module")
def lab(play: Callable[..., PlayedPattern]) -> PlayedPattern:
    return play("security", secrets=lab_documents())


def request(lab: PlayedPattern, with_cert: bool = True) -> dict:
    issuer = lab.first_container("cert-issuer")
    address = lab.played.addresses[lab.plan.pod("secure-app").pod]
    code, output = issuer.exec("python3", "-c", CLIENT_SCRIPT, address,
                               "cert" if with_cert else "none")
    assert code == 0, output
    return dict(json.loads(output.strip().splitlines()[-1]))


def test_a_client_in_another_pod_gets_through_the_proxy_with_mutual_tls(
        lab: PlayedPattern) -> None:
    answer = request(lab)
    assert answer.get("status") == 200, f"{answer}\n{lab.describe()}"
    assert answer["body"]["client_subject"] == "CN=podman-client"
    assert answer["body"]["client_verify"] == "SUCCESS"
    assert "error" in request(lab, with_cert=False)


def test_new_handshakes_see_the_renewals(lab: PlayedPattern) -> None:
    first = request(lab)["serial"]
    eventually(lambda: request(lab).get("serial") not in (None, first),
               "a renewed certificate on a new handshake",
               timeout=security.LIFETIME_SECONDS * 5)


def test_the_key_is_0600_for_the_sidecars_and_absent_from_the_app(lab: PlayedPattern) -> None:
    pod = lab.plan.pod("secure-app")
    for name in ("cert-renewer", "tls-proxy"):
        code, out = pm.exec_in(pod.container(name).container, "stat", "-L", "-c", "%a %u",
                               "/etc/tls/tls.key")
        assert (code, out.strip()) == (0, "600 10001"), (name, out)
    code, out = pm.exec_in(pod.container("main").container, "ls", "/etc/tls")
    assert code != 0 and "No such file or directory" in out


def test_the_apps_port_is_unreachable_from_another_pod_and_never_published(
        lab: PlayedPattern) -> None:
    address = lab.played.addresses[lab.plan.pod("secure-app").pod]
    issuer = lab.first_container("cert-issuer")
    assert issuer.exec("python3", "-c", CONNECT_SCRIPT, address, "8080")[1].strip() == \
        "ConnectionRefusedError"
    proxy = lab.plan.pod("secure-app").container("tls-proxy").container
    assert pm.exec_in(proxy, "python3", "-c", CONNECT_SCRIPT, "127.0.0.1", "8080")[1].strip() \
        == "connected"
    # What the demo publishes: never 8080, always on the loopback.
    plan = pm.adapt("security", pm.render("security"), lab_documents(), security.PODMAN_PUBLISH)
    for pod in plan.pods:
        spec = pod.document["spec"]["template"]["spec"]
        for container in spec.get("containers", []):
            for port in container.get("ports", []):
                assert port["containerPort"] != 8080 and port["hostIP"] == "127.0.0.1"
