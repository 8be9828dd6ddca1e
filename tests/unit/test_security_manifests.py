"""The security lab's manifests (k8s/security and its kind overlay), its Compose profile
and its demo's ports say what the lab teaches:

- the key and certificates live on a memory-backed emptyDir that only the two sidecars
  mount (the renewer read-write, the proxy read-only), never the app;
- both sidecars are native (init containers with restartPolicy: Always), the renewer
  first with a startup probe on its /readyz, so the proxy starts with a certificate;
- the app listens on 127.0.0.1:8080 and no Service, NodePort, Compose publish or podman
  publish names 8080;
- the NetworkPolicies admit exactly: the proxy's 8443 from everyone, the issuer's 8444
  from the secure-app pods (where the renewer's RENEWER_ISSUER_URL leads), the admin ports
  from Prometheus, nothing else (evaluated with tests/unit/test_network_policy.py's
  evaluator, as a cluster would);
- the secrets go where they are needed only: the CA's key to the issuer, the token to the
  issuer and the renewer;
- the names agree: the renewer asks for names the issuer allows, over a name the issuer's
  own certificate covers, and the proxy reads the directory the renewer writes.

The generic rules (restricted profile, probes, resources, pinned images, strict schema)
are tests/unit/test_manifests.py's, which renders every k8s/*/.
"""

from __future__ import annotations

import fnmatch
from typing import Any
from urllib.parse import urlsplit

import pytest

from demo import security
from demo.containers import compose_ports, compose_services
from patterns.security.cert_issuer.config import DEFAULT_ALLOWED_NAMES
from tests.conftest import render_kustomize as render
from tests.unit.test_network_policy import (
    PROMETHEUS,
    Docs,
    Pod,
    Source,
    admits,
    env_of,
    pods_of,
    resolve,
    strangers,
)

RENDERS = ["k8s/security", "k8s/security/kind"]
APP_PORT = 8080
ADMIN_PORTS = {"cert-issuer": {9106}, "secure-app": {9107, 9108}}


@pytest.fixture(scope="module", params=RENDERS)
def docs(request: pytest.FixtureRequest) -> Docs:
    return render(request.param)


def pod_spec(docs: Docs, name: str) -> dict[str, Any]:
    return dict(docs[("Deployment", name)]["spec"]["template"]["spec"])


def containers_of(docs: Docs, name: str) -> dict[str, dict[str, Any]]:
    spec = pod_spec(docs, name)
    return {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def test_the_key_lives_in_memory_and_only_the_sidecars_mount_it(docs: Docs) -> None:
    spec = pod_spec(docs, "secure-app")
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tls"]["emptyDir"]["medium"] == "Memory"
    containers = containers_of(docs, "secure-app")
    renewer = mounts(containers["cert-renewer"])["tls"]
    proxy = mounts(containers["tls-proxy"])["tls"]
    assert not renewer.get("readOnly"), "the renewer writes the key"
    assert proxy.get("readOnly") is True, "the proxy only reads it"
    assert "tls" not in mounts(containers["main"]), "the app never sees the key"
    # Same directory on both sides, as each one's setting names it.
    assert env_of(containers["cert-renewer"])["RENEWER_CERT_DIR"] == renewer["mountPath"]
    assert env_of(containers["tls-proxy"])["PROXY_CERT_DIR"] == proxy["mountPath"]
    # The key is 0600 for the renewer's uid; the proxy reads it as the same uid.
    assert "RENEWER_KEY_GROUP_READABLE" not in env_of(containers["cert-renewer"])
    assert spec["securityContext"]["runAsUser"] == 10001
    assert all("runAsUser" not in (c.get("securityContext") or {}) for c in containers.values())


def test_both_sidecars_are_native_and_the_renewer_starts_first(docs: Docs) -> None:
    spec = pod_spec(docs, "secure-app")
    init = spec["initContainers"]
    assert [c["name"] for c in init] == ["cert-renewer", "tls-proxy"]
    assert all(c["restartPolicy"] == "Always" for c in init)
    probe = init[0]["startupProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in init[0]["ports"]}
    assert probe["path"] == "/readyz"
    assert ports[probe["port"]] == int(env_of(init[0])["RENEWER_HTTP_PORT"])
    assert [c["name"] for c in spec["containers"]] == ["main"]


def test_the_app_listens_on_the_pods_loopback_and_no_port_leads_to_it(docs: Docs) -> None:
    main = containers_of(docs, "secure-app")["main"]
    assert env_of(main)["WHOAMI_APP_HOST"] == "127.0.0.1"
    assert "ports" not in main, "a declared port would suggest it is reachable"
    for probe in ("livenessProbe", "readinessProbe"):
        assert "exec" in main[probe], "the kubelet cannot reach 127.0.0.1 in the pod"
    assert env_of(containers_of(docs, "secure-app")["tls-proxy"])["PROXY_UPSTREAM"] == \
        f"127.0.0.1:{APP_PORT}"
    for (kind, name), doc in docs.items():
        if kind != "Service":
            continue
        for port in doc["spec"]["ports"]:
            assert APP_PORT not in (port["port"], port.get("targetPort")), f"Service {name}"
            if name == "secure-app" and port.get("nodePort"):
                assert port["port"] == 8443, "a NodePort for the TLS port only"


def test_compose_and_podman_publish_no_app_port_and_the_demo_uses_what_they_publish() -> None:
    published = {p.port for p in compose_ports("security")}
    assert APP_PORT not in published
    assert set(security.PORTS.values()) == published
    assert APP_PORT not in security.PODMAN_PUBLISH.values()
    assert set(security.PODMAN_PUBLISH.values()) == set(security.PORTS.values())
    services = compose_services("security")
    main = services["security-main"]
    assert main["environment"]["WHOAMI_APP_HOST"] == "127.0.0.1"
    for name in ("security-renewer", "security-proxy"):
        assert services[name]["network_mode"] == "service:security-main"
    # The certificates on a tmpfs volume, read-only for the proxy, absent from the app.
    assert "security-tls:/etc/tls" in services["security-renewer"]["volumes"]
    assert "security-tls:/etc/tls:ro" in services["security-proxy"]["volumes"]
    assert not any("security-tls" in volume for volume in main.get("volumes", []))


def test_secrets_go_only_where_they_are_needed(docs: Docs) -> None:
    def mounting(volume_kind: str, name: str) -> set[str]:
        found = set()
        for workload in ("cert-issuer", "secure-app"):
            spec = pod_spec(docs, workload)
            volumes = {v["name"] for v in spec["volumes"]
                       if (v.get(volume_kind) or {}).get(
                           "secretName" if volume_kind == "secret" else "name") == name}
            found |= {f"{workload}/{c}" for c, spec_c in containers_of(docs, workload).items()
                      if volumes & set(mounts(spec_c))}
        return found

    assert mounting("secret", "cert-issuer-ca") == {"cert-issuer/cert-issuer"}
    assert mounting("secret", "bootstrap-token") == {"cert-issuer/cert-issuer",
                                                     "secure-app/cert-renewer"}
    assert mounting("configMap", "issuer-ca") == {"secure-app/cert-renewer",
                                                  "secure-app/tls-proxy"}
    for workload in ("cert-issuer", "secure-app"):
        assert pod_spec(docs, workload)["automountServiceAccountToken"] is False


def test_the_names_agree(docs: Docs) -> None:
    issuer = env_of(containers_of(docs, "cert-issuer")["cert-issuer"])
    renewer = env_of(containers_of(docs, "secure-app")["cert-renewer"])
    allowed = issuer.get("ISSUER_ALLOWED_NAMES", ",".join(DEFAULT_ALLOWED_NAMES)).split(",")
    for name in renewer["RENEWER_DNS_NAMES"].split(","):
        assert any(fnmatch.fnmatchcase(name, pattern) and name.count(".") == pattern.count(".")
                   for pattern in allowed), f"the issuer does not allow {name}"
    host = urlsplit(renewer["RENEWER_ISSUER_URL"]).hostname
    assert host in issuer["ISSUER_SERVER_NAMES"].split(",")
    proxy = env_of(containers_of(docs, "secure-app")["tls-proxy"])
    ca_mount = mounts(containers_of(docs, "secure-app")["tls-proxy"])["issuer-ca"]["mountPath"]
    assert proxy["PROXY_CLIENT_CA_FILE"] == f"{ca_mount}/ca.crt", "mutual TLS on, the issuer's CA"
    assert renewer["RENEWER_CA_BUNDLE"] == f"{ca_mount}/ca.crt"
    assert int(renewer["RENEWER_LIFETIME_SECONDS"]) == security.LIFETIME_SECONDS


def _pod(docs: Docs, name: str) -> Pod:
    return next(pod for pod in pods_of(docs) if pod.name == name)


def test_the_network_policies_admit_exactly_what_the_lab_needs(docs: Docs) -> None:
    app, issuer = _pod(docs, "secure-app"), _pod(docs, "cert-issuer")
    renewer = env_of(containers_of(docs, "secure-app")["cert-renewer"])
    target = urlsplit(renewer["RENEWER_ISSUER_URL"])
    assert target.hostname and target.port
    flows = resolve(docs, pods_of(docs), app, target.hostname, target.port, "RENEWER_ISSUER_URL")
    assert {(f.server.name, f.port) for f in flows} == {("cert-issuer", 8444)}
    namespace_stranger = Source("podpatterns-security", (("app.kubernetes.io/name", "x"),), "x")
    sources = [app.source(), issuer.source(), PROMETHEUS, namespace_stranger, *strangers(docs)]
    expected = {
        ("secure-app", 8443): set(sources),  # the TLS port: everyone
        ("cert-issuer", 8444): {app.source()},  # the renewer's requests
        **{(pod, port): {PROMETHEUS} for pod, ports in ADMIN_PORTS.items() for port in ports},
    }
    for server in (app, issuer):
        for port, protocol in sorted(server.ports() | {(APP_PORT, "TCP"), (1, "TCP")}):
            admitted = {source for source in sources if admits(docs, source, server, port,
                                                                protocol)}
            assert admitted == expected.get((server.name, port), set()), (
                f"{server.name}:{port} admits {sorted(s.name for s in admitted)}")
    assert not any(admits(docs, s, app, APP_PORT) for s in sources)


def test_podman_plays_the_ca_bundle_configmap_as_a_volume_of_its_files() -> None:
    """podman 4.3 cannot mount a ConfigMap the demo creates: demo/podman.py makes it a
    volume of its files, as it does a Secret's, and names it when it is missing."""
    from demo import podman as pm

    namespace = security.NAMESPACE
    given = [
        pm.secret_document("cert-issuer-ca", namespace, {"ca.key": b"k", "ca.crt": b"c"}),
        pm.secret_document("bootstrap-token", namespace, {"token": b"t"}),
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "issuer-ca", "namespace": namespace},
         "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\n"}},
    ]
    plan = pm.adapt("security", pm.render("security"), given, security.PODMAN_PUBLISH)
    assert plan.missing == []
    volume = next(v for v in plan.pod("secure-app").secret_volumes if v.secret == "issuer-ca")
    assert volume.files == {"ca.crt": b"-----BEGIN CERTIFICATE-----\n"}
    assert volume.mode == 0o644
    without = pm.adapt("security", pm.render("security"), given[:2])
    assert without.missing == [f"ConfigMap {namespace}/issuer-ca"]
