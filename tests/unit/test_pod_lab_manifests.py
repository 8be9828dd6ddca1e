"""Lab 0's pod (k8s/0-pod/base/pod-definition.yaml): what the lab teaches is what the file
says, and it stays short enough for one slide while meeting the restricted profile.

- one document, one `kind: Pod`, two regular containers of images the suite builds, and
  exactly one volume both mount (an emptyDir, at the same path, read-only for the sidecar);
- the suite's rules for every workload (tests/unit/test_manifests.py: Pod Security
  "restricted", read-only root filesystem, requests, limits, probes, pinned images), on the
  file itself and on both renders;
- at most 80 lines, and a comment on each field the lab talks about;
- the Compose profile `pod` is the same pod: same images, the shared volume at the same
  path, each container on the other's localhost, the sidecar starting first and stopping
  last; and the demo talks to the ports it publishes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from demo import containers, pod
from tests.conftest import ROOT, render_kustomize
from tests.unit.test_image_build import build
from tests.unit.test_manifests import Workload, violations

POD_DEFINITION = ROOT / "k8s" / "0-pod" / "base" / "pod-definition.yaml"
MAX_LINES = 80
# The fields the guide talks about: each line carries its own comment.
COMMENTED = ("restartPolicy:", "securityContext:", "runAsNonRoot:", "runAsUser:", "fsGroup:",
             "seccompProfile:", "containers:", "- name: main", "- name: sidecar", "volumes:",
             "- name: shared", "- name: main-tmp", "- name: sidecar-state", "ADAPTER_INPUTS",
             "readOnly: true", "terminationGracePeriodSeconds:")


def pod_definition() -> dict[str, Any]:
    documents = [doc for doc in yaml.safe_load_all(POD_DEFINITION.read_text()) if doc]
    assert len(documents) == 1, f"{POD_DEFINITION}: expected one document"
    return dict(documents[0])


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {mount["name"]: mount for mount in container.get("volumeMounts", [])}


def image_of(container: dict[str, Any]) -> str:
    return str(container["image"]).rsplit("/", 1)[-1].split(":", 1)[0]


def test_one_pod_two_containers_one_shared_empty_dir() -> None:
    doc = pod_definition()
    assert doc["kind"] == "Pod"
    spec = doc["spec"]
    assert "initContainers" not in spec, "lab 0 is the plain pod: two entries of containers:"
    main, sidecar = spec["containers"]
    assert (main["name"], sidecar["name"]) == ("main", "sidecar")
    assert (image_of(main), image_of(sidecar)) == ("legacy-app", "log-adapter")
    built = {spec.service for spec in build.image_specs()}  # what images/build.py builds
    assert {image_of(main), image_of(sidecar)} <= built, "images the suite builds"
    shared = set(mounts(main)) & set(mounts(sidecar))
    assert shared == {"shared"}, f"volumes mounted by both: {shared}"
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert "emptyDir" in volumes["shared"]
    assert mounts(main)["shared"]["mountPath"] == mounts(sidecar)["shared"]["mountPath"]
    assert mounts(sidecar)["shared"].get("readOnly") is True
    assert not mounts(main)["shared"].get("readOnly")
    # The sidecar reads the file main writes, at the path where it mounts the volume.
    env = {item["name"]: item["value"] for item in sidecar["env"]}
    assert env["ADAPTER_INPUTS"] == f"combined={mounts(sidecar)['shared']['mountPath']}/access.log"
    assert spec.get("restartPolicy", "Always") == "Always"


def test_the_pod_meets_the_restricted_profile_and_the_suite_rules() -> None:
    problems = violations(Workload(str(POD_DEFINITION.relative_to(ROOT)), pod_definition()))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", ["k8s/0-pod", "k8s/0-pod/kind"])
def test_both_renders_meet_the_rules_in_a_restricted_namespace(overlay: str) -> None:
    rendered = render_kustomize(overlay)
    workload = Workload(overlay, rendered[("Pod", "two-containers")])
    assert violations(workload) == []
    namespace = rendered[("Namespace", pod.NAMESPACE)]["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    deny = rendered[("NetworkPolicy", "default-deny-ingress")]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    assert workload.doc["metadata"]["namespace"] == pod.NAMESPACE


def test_the_kind_overlay_runs_the_loaded_images() -> None:
    spec = render_kustomize("k8s/0-pod/kind")[("Pod", pod.POD)]["spec"]
    for container in spec["containers"]:
        assert container["image"].endswith(":dev"), container["image"]
        assert container["imagePullPolicy"] == "Never"


def test_the_definition_fits_on_a_slide_with_its_fields_commented() -> None:
    lines = POD_DEFINITION.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"{len(lines)} lines: more than one slide"
    for field in COMMENTED:
        found = [line for line in lines if line.strip().startswith(field)
                 or f"{{{field}" in line or f" {field}" in line]
        assert found, f"{field!r} is not in {POD_DEFINITION.name}"
        assert all("#" in line for line in found), f"{field!r} has no comment: {found}"


# --- the same pod on Compose ----------------------------------------------------------------


def compose_pod() -> dict[str, Any]:
    return containers.compose_services(pod.PROFILE)


def volume_mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    found = {}
    for entry in service.get("volumes", []):
        volume, path, *mode = str(entry).split(":")
        found[volume] = (path, mode == ["ro"])
    return found


def test_compose_plays_the_same_pod() -> None:
    services = compose_pod()
    assert set(services) == set(pod.COMPOSE_SERVICES.values())
    main, sidecar = (services[pod.COMPOSE_SERVICES[name]] for name in ("main", "sidecar"))
    spec = pod_definition()["spec"]
    manifest = {c["name"]: c for c in spec["containers"]}
    for name, service in (("main", main), ("sidecar", sidecar)):
        assert service["image"].split(":")[0] == manifest[name]["image"].split(":")[0]
        assert service["user"] == "10001:10001" and service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert service["restart"] == "unless-stopped", "the pod's restartPolicy: Always"
    shared_path = mounts(manifest["main"])["shared"]["mountPath"]
    assert volume_mounts(main)["pod-shared"] == (shared_path, False)
    assert volume_mounts(sidecar)["pod-shared"] == (shared_path, True)
    assert sidecar["environment"]["ADAPTER_INPUTS"] == \
        next(e["value"] for e in manifest["sidecar"]["env"] if e["name"] == "ADAPTER_INPUTS")
    # One network namespace, owned by the sidecar: it starts first (main waits for its
    # healthcheck) and stops last, and a restart of main keeps the namespace.
    assert main["network_mode"] == f"service:{pod.COMPOSE_SERVICES['sidecar']}"
    assert main["depends_on"] == {pod.COMPOSE_SERVICES["sidecar"]: {"condition": "service_healthy"}}
    assert "healthcheck" in sidecar and "healthcheck" in main


def test_the_demo_talks_to_the_ports_compose_publishes() -> None:
    published = {p.port: p for p in containers.compose_ports(pod.PROFILE)}
    assert set(pod.PORTS.values()) == set(published)
    assert {p.port for p in pod.ports("compose")} == set(published)
    assert pod.ports("kind") == [], "on kind the demo reaches the pod with kubectl exec only"


def test_the_pod_lab_takes_no_port_of_another_demo() -> None:
    services = yaml.safe_load(containers.COMPOSE_FILE.read_text())["services"]
    profiles = {profile for service in services.values() for profile in service["profiles"]}
    others = {p.port for profile in profiles - {pod.PROFILE}
              for p in containers.compose_ports(profile)}
    assert not set(pod.PORTS.values()) & others


def test_the_guide_names_the_files_it_teaches_from() -> None:
    guide = (ROOT / "patterns" / "0-pod" / "README.md").read_text()
    for path in ("k8s/0-pod/base/pod-definition.yaml", "k8s/0-pod/kind", "--profile pod"):
        assert path in guide, path
    assert Path(ROOT / "k8s" / "0-pod" / "kind" / "kustomization.yaml").exists()
