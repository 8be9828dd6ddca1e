"""The security lab in real containers built from images/: a cert-issuer pod (the CA), the
secure-app pod (whoami-app on 127.0.0.1:8080, cert-renewer and tls-proxy sharing its
network namespace and a tmpfs volume for the key), and a client pod elsewhere on the
network.

What a user relies on: every container runs as uid 10001 on a read-only root; the key is
made in the pod, 0600, on the memory volume only the sidecars mount; a client with a
certificate of the CA gets through 8443 with the chain verified to the issuer's CA (and
sees each renewal on new handshakes), one without is refused; the app's 8080 cannot be
reached from another container, while the proxy reaches it on the pod's loopback.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from patterns.security import pki
from tests.container.conftest import Pod, PodContainer, Pods

LIFETIME_SECONDS = 6
CLIENT = "test-client"
# Run in the client pod: one request through the proxy, what the handshake served and what
# the app answered, as JSON; or the error, as JSON.
CLIENT_SCRIPT = r"""
import http.client, json, ssl, sys
host, with_cert = sys.argv[1], sys.argv[2] == "cert"
context = ssl.create_default_context(cafile="/etc/client/ca.crt")
if with_cert:
    context.load_cert_chain("/etc/client/client.crt", "/etc/client/client.key")
conn = http.client.HTTPSConnection(host, 8443, timeout=5, context=context)
try:
    conn.request("GET", "/", headers={"X-Client-Subject": "CN=forged"})
    reply = conn.getresponse()
    body = reply.read().decode()
    cert = conn.sock.getpeercert()
    print(json.dumps({"status": reply.status, "body": json.loads(body),
                      "serial": cert["serialNumber"].lower(), "issuer": cert["issuer"],
                      "protocol": conn.sock.version()}))
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


@dataclass
class SecurityPods:
    issuer: PodContainer
    main: PodContainer
    renewer: PodContainer
    proxy: PodContainer
    client: PodContainer
    app_pod: Pod
    app_name: str
    pods: Pods


def _readable_by_pods(directory: Path) -> None:
    """Bind-mounted files for containers running as uid 10001: theirs when the test runs
    as root, else readable by all (the directory is the test's own)."""
    directory.chmod(0o755)
    for path in directory.iterdir():
        if os.geteuid() == 0:
            os.chown(path, 10001, 10001)
        else:
            path.chmod(0o644)


@pytest.fixture(scope="module")
def lab(images: dict[str, str], pods: Pods,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecurityPods]:
    ca_key, ca_cert = pki.create_ca("container test CA")
    secrets_dir = tmp_path_factory.mktemp("security")
    ca_dir, token_dir, client_dir = (secrets_dir / "ca", secrets_dir / "token",
                                     secrets_dir / "client")
    for directory in (ca_dir, token_dir, client_dir):
        directory.mkdir()
    (ca_dir / "ca.key").write_bytes(pki.key_to_pem(ca_key))
    (ca_dir / "ca.crt").write_bytes(pki.cert_to_pem(ca_cert))
    (token_dir / "token").write_text(secrets.token_urlsafe(24))
    client_key = pki.generate_key()
    (client_dir / "client.key").write_bytes(pki.key_to_pem(client_key))
    (client_dir / "client.crt").write_bytes(pki.cert_to_pem(pki.issue(
        ca_key, ca_cert, client_key.public_key(), [CLIENT], timedelta(hours=1))))
    (client_dir / "ca.crt").write_bytes(pki.cert_to_pem(ca_cert))
    for directory in (ca_dir, token_dir, client_dir):
        _readable_by_pods(directory)

    issuer_pod, app_pod, client_pod = pods.new("issuer"), pods.new("secure"), pods.new("client")
    app_name = f"{app_pod.name}-main"  # the pod's address: its first container's name
    issuer = issuer_pod.start("cert-issuer", images["cert-issuer"], env={
        "ISSUER_SERVER_NAMES": f"{issuer_pod.name}-cert-issuer",
        "ISSUER_ALLOWED_NAMES": f"localhost,{app_name}",
    }, mounts={str(ca_dir): "/var/lib/cert-issuer:ro",
               str(token_dir): "/var/run/secrets/podpatterns/bootstrap-token:ro"})
    tls = app_pod.volume("tls", size="1m")
    main = app_pod.start("main", images["whoami-app"], env={"WHOAMI_APP_HOST": "127.0.0.1"})
    renewer = app_pod.start("cert-renewer", images["cert-renewer"], env={
        "RENEWER_ISSUER_URL": f"https://{issuer.name}:8444",
        "RENEWER_DNS_NAMES": f"{app_name},localhost",
        "RENEWER_LIFETIME_SECONDS": str(LIFETIME_SECONDS),
        "RENEWER_RETRY_MIN_SECONDS": "0.2", "RENEWER_RETRY_MAX_SECONDS": "1",
    }, mounts={tls: "/etc/tls", str(ca_dir / "ca.crt"): "/etc/issuer-ca/ca.crt:ro",
               str(token_dir): "/var/run/secrets/podpatterns/bootstrap-token:ro"})
    pods.eventually(lambda: renewer.http_get("http://127.0.0.1:9107/readyz")[0] == 200,
                    "the renewer's first certificate", timeout=60)
    proxy = app_pod.start("tls-proxy", images["tls-proxy"], env={
        "PROXY_CLIENT_CA_FILE": "/etc/issuer-ca/ca.crt",
    }, mounts={tls: "/etc/tls:ro", str(ca_dir / "ca.crt"): "/etc/issuer-ca/ca.crt:ro"})
    pods.eventually(lambda: proxy.http_get("http://127.0.0.1:9108/readyz")[0] == 200,
                    "the proxy ready", timeout=60)
    pods.eventually(lambda: main.http_get("http://127.0.0.1:8080/readyz")[0] == 200,
                    "the app ready", timeout=60)
    client = _client(client_pod, images["whoami-app"], client_dir)
    yield SecurityPods(issuer, main, renewer, proxy, client, app_pod, app_name, pods)


def _client(pod: Pod, image: str, client_dir: Path) -> PodContainer:
    """A container that only sleeps, holding the client's certificate, in a pod of its own."""
    container = pod.client.containers.run(
        image, entrypoint=["sleep", "infinity"], name=f"{pod.name}-client",
        network=pod.network, hostname=pod.name,
        volumes={str(client_dir): {"bind": "/etc/client", "mode": "ro"}},
        read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"],
        user="10001:10001", mem_limit="64m", labels={"podpatterns.test": "container-tier"},
        detach=True)  # fmt: skip
    made = PodContainer(name=container.name, container=container)
    pod.containers.append(made)
    return made


def request(lab: SecurityPods, with_cert: bool = True) -> dict[str, Any]:
    code, output = lab.client.exec("python3", "-c", CLIENT_SCRIPT, lab.app_name,
                                   "cert" if with_cert else "none")
    assert code == 0, output
    return dict(json.loads(output))


def test_every_container_runs_as_10001_on_a_read_only_root(lab: SecurityPods) -> None:
    for item in (lab.issuer, lab.main, lab.renewer, lab.proxy):
        assert item.exec("id", "-u")[1].strip() == "10001", item.name
        host = item.attrs()["HostConfig"]
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"], item.name


def test_the_key_is_0600_on_the_memory_volume_and_only_the_sidecars_see_it(
        lab: SecurityPods) -> None:
    for sidecar in (lab.renewer, lab.proxy):
        code, out = sidecar.exec("stat", "-L", "-c", "%a %u", "/etc/tls/tls.key")
        assert (code, out.strip()) == (0, "600 10001"), (sidecar.name, out)
        mounts = sidecar.exec("cat", "/proc/mounts")[1].splitlines()
        assert any(line.split()[1:3] == ["/etc/tls", "tmpfs"] for line in mounts), mounts
    code, out = lab.main.exec("ls", "/etc/tls")
    assert code != 0 and "No such file or directory" in out
    # The key never appears in a log line.
    key = lab.renewer.exec("cat", "/etc/tls/tls.key")[1]
    body = "".join(line for line in key.splitlines() if "-----" not in line)
    assert body and body[:40] not in lab.renewer.logs() + lab.proxy.logs()


def test_a_client_with_a_certificate_gets_through_with_the_chain_to_the_ca(
        lab: SecurityPods) -> None:
    answer = request(lab)
    assert answer.get("status") == 200, answer
    assert answer["body"]["client_subject"] == f"CN={CLIENT}", "the forged header was removed"
    assert answer["body"]["client_verify"] == "SUCCESS"
    assert answer["body"]["proto"] == "https"
    assert answer["issuer"] == [[["commonName", "container test CA"]]]
    assert answer["protocol"] in ("TLSv1.2", "TLSv1.3")


def test_new_handshakes_see_each_renewal(lab: SecurityPods) -> None:
    first = request(lab)["serial"]
    second = lab.pods.eventually(
        lambda: (serial := request(lab).get("serial")) not in (None, first) and serial,
        "a renewed certificate on a new handshake", timeout=LIFETIME_SECONDS * 4)
    assert second != first


def test_a_client_without_a_certificate_is_refused(lab: SecurityPods) -> None:
    answer = request(lab, with_cert=False)
    assert "error" in answer and "status" not in answer, answer


def test_the_apps_port_is_reachable_only_inside_the_pod(lab: SecurityPods) -> None:
    assert lab.client.exec("python3", "-c", CONNECT_SCRIPT, lab.app_name, "8080")[1].strip() \
        == "ConnectionRefusedError"
    assert lab.proxy.exec("python3", "-c", CONNECT_SCRIPT, "127.0.0.1", "8080")[1].strip() \
        == "connected"
    published = lab.main.attrs()["NetworkSettings"]["Ports"] or {}
    assert not any(bindings for bindings in published.values())
