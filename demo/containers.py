"""The container runtimes: build and load images, bring a pattern up on kind, podman or
Compose, forward ports, check that what answers is what the demo started, tear down.
Pattern modules only say what to show once it runs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from demo import ROOT, lifecycle, podman, ports, processes
from demo.console import say
from demo.errors import DemoError
from demo.runtimes import compose_command

# The cluster `make kind-up` creates; the Makefile exports KIND_CLUSTER to the demo.
KIND_CLUSTER = os.environ.get("KIND_CLUSTER", "podpatterns")
IMAGE_RE = re.compile(r"(image:\s*podpatterns/[a-z0-9-]+):[A-Za-z0-9_.-]+")
COMPOSE_FILE = ROOT / "docker-compose.yml"
LOGS = ROOT / "build"


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    say("$ " + " ".join(argv))
    return subprocess.run(argv, check=True, text=True, cwd=ROOT, **kwargs)


def build_images() -> str:
    """`make images` (it reuses the images of this tag when they exist, else builds them,
    and says which); returns the tag, as it wrote it in build/images.json (asking for the
    tag again could give another one: uncommitted edits made meanwhile change it)."""
    run(["make", "--no-print-directory", "images"])
    return str(json.loads((ROOT / "build" / "images.json").read_text())["tag"])


def built_images() -> dict[str, str]:
    """`make images`, then every image it built or reused: service -> reference."""
    build_images()
    return dict(json.loads((ROOT / "build" / "images.json").read_text())["images"])


# --- kind -----------------------------------------------------------------------------------


def kind_cluster_exists() -> bool:
    """Whether kind has the cluster KIND_CLUSTER (False without a `kind` command)."""
    if shutil.which("kind") is None:
        return False
    clusters = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True)
    return KIND_CLUSTER in clusters.stdout.split()


def use_kind_cluster(create: bool = True) -> bool:
    """Create the kind cluster if missing (with `create`), and point every kubectl this
    demo runs, its children's included, at it: whatever context the user's kubeconfig has
    selected, a demo never applies to or deletes from another cluster. False when there is
    no cluster to use. Once it has answered True, it does nothing more."""
    if os.environ.get("KUBECONFIG") == str(_kubeconfig()):
        return True
    if kind_cluster_exists():
        say(f"kind cluster {KIND_CLUSTER!r} exists, reusing it")
    elif create:
        run(["make", "--no-print-directory", "kind-up", f"KIND_CLUSTER={KIND_CLUSTER}"])
    else:
        return False
    kubeconfig = _kubeconfig()
    kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    config = subprocess.run(["kind", "get", "kubeconfig", "--name", KIND_CLUSTER],
                            check=True, text=True, capture_output=True).stdout
    kubeconfig.touch(mode=0o600)
    kubeconfig.write_text(config)
    os.environ["KUBECONFIG"] = str(kubeconfig)
    say(f"kubectl talks to kind-{KIND_CLUSTER} (KUBECONFIG={kubeconfig.relative_to(ROOT)}); "
        f"in your shell: kubectl config use-context kind-{KIND_CLUSTER}")
    return True


def _kubeconfig() -> Path:
    return ROOT / "build" / f"kind-{KIND_CLUSTER}.kubeconfig"


def kind_teardown_on_abort(pattern: str) -> None:
    """Delete the pattern's workloads and namespaces if the run ends abnormally."""
    overlay = str(Path("k8s") / pattern / "kind")

    def delete() -> None:
        run(["kubectl", "delete", "-k", overlay, "--ignore-not-found", "--wait=false"],
            stdout=subprocess.DEVNULL)

    lifecycle.on_abort(f"the {pattern} pods on kind", delete)


def kind_up(pattern: str, namespaces: list[str], restart: bool = False) -> str:
    """Build and load the images, apply k8s/<pattern>/kind with their tag, and wait until
    every Deployment has rolled out and no pod of an earlier run is left. `restart`: roll
    every Deployment even if its spec did not change (new Secrets to read)."""
    use_kind_cluster()
    tag = build_images()
    run(["make", "--no-print-directory", "kind-load", f"IMAGE_TAG={tag}",
         f"KIND_CLUSTER={KIND_CLUSTER}"])
    rendered = run(
        ["kubectl", "kustomize", str(Path("k8s") / pattern / "kind")], capture_output=True
    ).stdout
    # The overlay names the stable tag `make kind-load` also gives (:dev); the demo pins
    # exactly what it just built, so that a rebuild rolls the pods.
    rendered = IMAGE_RE.sub(rf"\1:{tag}", rendered)
    kind_teardown_on_abort(pattern)
    # A Job's pod template is immutable: a re-run with new image tags replaces the Job.
    for namespace in namespaces:
        run(["kubectl", "-n", namespace, "delete", "job", "--all", "--ignore-not-found"])
    run(["kubectl", "apply", "-f", "-"], input=rendered)
    # In the order of `namespaces`: what the others depend on first (the databases).
    deployments = sorted(
        ((doc["metadata"].get("namespace", "default"), doc["metadata"]["name"])
         for doc in yaml.safe_load_all(rendered) if doc and doc.get("kind") == "Deployment"),
        key=lambda item: namespaces.index(item[0]) if item[0] in namespaces else len(namespaces))
    # A re-run after a commit is a rolling update: the Deployments are Available already
    # (their old pods are), so `wait --for=condition=Available` would return at once and a
    # port-forward would pick an old pod, deleted seconds later. `rollout status` returns
    # once the new pods are available and the old ones are terminating; then wait until
    # those are gone, so that `port-forward svc/...` can only pick a new one.
    for namespace, name in deployments:
        if restart:
            run(["kubectl", "-n", namespace, "rollout", "restart", f"deployment/{name}"])
        run(["kubectl", "-n", namespace, "rollout", "status", f"deployment/{name}",
             "--timeout=300s"])
    for namespace in namespaces:
        _wait_for_terminating_pods(namespace)
    return tag


def _wait_for_terminating_pods(namespace: str) -> None:
    pods = json.loads(run(["kubectl", "-n", namespace, "get", "pods", "-o", "json"],
                          capture_output=True).stdout)["items"]
    leaving = [f"pod/{pod['metadata']['name']}" for pod in pods
               if pod["metadata"].get("deletionTimestamp")]
    if leaving:
        say(f"waiting for the earlier run's pods to end: {', '.join(leaving)}")
        run(["kubectl", "-n", namespace, "wait", "--for=delete", *leaving, "--timeout=180s"])


class PortForward:
    """A running `kubectl port-forward`: check() raises if it is gone."""

    def __init__(self, proc: subprocess.Popen[bytes], local: int, log: Path) -> None:
        self.proc, self.local, self.log = proc, local, log

    def problem(self) -> str | None:
        if self.proc.poll() is not None:
            last = self.log.read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
            return (f"kubectl port-forward to local port {self.local} exited with "
                    f"{self.proc.returncode}: {last[0]}")
        # Whether something listens first, then whose it is: asked the other way round, a
        # forward that starts listening between the two questions looked like a stranger.
        if not ports.in_use(self.local):
            return None
        held = ports.held_by(self.local, "127.0.0.1", ports.session_members(self.proc.pid))
        if held is False:
            return (f"port {self.local} is held by {ports.holder(self.local)}, not by the "
                    f"kubectl port-forward this demo started (pid {self.proc.pid})")
        return None

    def check(self) -> None:
        problem = self.problem()
        if problem:
            raise DemoError(problem)


def check_all(*forwards: PortForward) -> Callable[[], None]:
    """One check for several port-forwards."""
    def check() -> None:
        for forward in forwards:
            forward.check()
    return check


@contextlib.contextmanager
def port_forward(namespace: str, target: str, local: int, remote: int) -> Iterator[PortForward]:
    """`kubectl port-forward` for as long as the block runs, once it listens."""
    argv = ["kubectl", "-n", namespace, "port-forward", target, f"{local}:{remote}"]
    say("$ " + " ".join(argv) + " &")
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"port-forward-{local}.log"
    with open(log, "wb") as out:
        # Its own session: Ctrl-C in the terminal stops the demo, which then ends the
        # forward itself, instead of killing the forward while the demo still uses it.
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    forward = PortForward(proc, local, log)
    try:
        deadline = time.monotonic() + 20
        while True:
            forward.check()  # exited, or another process holds the port
            if ports.in_use(local):
                break
            if time.monotonic() > deadline:
                raise DemoError(f"kubectl port-forward did not listen on {local} in 20s; "
                                f"its output: {log}")
            time.sleep(0.2)
        yield forward
    finally:
        proc.terminate()
        proc.wait()


# --- podman ---------------------------------------------------------------------------------


def podman_up(pattern: str, publish: dict[tuple[str, int], int],
              secrets: list[dict[str, Any]] | None = None) -> podman.Played:
    """Build the images and play k8s/<pattern> on podman, adapted by demo/podman.py, which
    says what it changes and why; returns once every container is ready. `publish`:
    {(workload, containerPort): host port}, on 127.0.0.1."""
    images = built_images()
    processes.record_played("podman", pattern)
    lifecycle.on_abort(f"the {pattern} pods on podman", lambda: _podman_down(pattern))
    return podman.start(pattern, images, publish, secrets or [], say=say)


def _podman_down(pattern: str) -> None:
    removed = podman.clean(pattern)
    processes.forget_played("podman", pattern)
    if removed:
        say(f"removed the {pattern} pods on podman: {', '.join(removed)}")


# --- Compose --------------------------------------------------------------------------------


def _compose_env(tag: str) -> dict[str, str]:
    return {**os.environ, "IMAGE_TAG": tag}


def compose(profile: str, *args: str, tag: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    command = compose_command()
    if command is None:
        raise DemoError("no `docker compose` or `docker-compose` found")
    return run([*command, "--profile", profile, *args], env=_compose_env(tag), **kwargs)


def _compose_quiet(profiles: str | list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """A Compose command whose output is the caller's (IMAGE_TAG is required by the file,
    not by queries or `down`)."""
    command = compose_command() or ["docker-compose"]
    selected = [arg for profile in ([profiles] if isinstance(profiles, str) else profiles)
                for arg in ("--profile", profile)]
    return subprocess.run([*command, *selected, *args], cwd=ROOT, text=True,
                          capture_output=True, env=_compose_env("none"), check=False)


_VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _expand(text: str) -> str:
    """${NAME}, ${NAME:-default} and ${NAME-default} as Compose reads them here."""
    return _VARIABLE.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), text)


def _published(entry: object) -> tuple[str, int] | None:
    """(host address, host port) of one `ports:` entry: "8080:8080",
    "127.0.0.1:8080:8080/tcp", "${VAR:-127.0.0.1}:8080:8080", or the long syntax."""
    if isinstance(entry, dict):
        published = entry.get("published")
        return (None if published is None else
                (_expand(str(entry.get("host_ip", "0.0.0.0"))), int(_expand(str(published)))))
    parts = str(entry).rsplit(":", 2)
    if len(parts) < 2:
        return None  # a container port only: Docker picks a random host port
    address = _expand(parts[0]) if len(parts) == 3 else "0.0.0.0"
    return (address or "0.0.0.0").strip("[]"), int(_expand(parts[-2]))


def compose_services(profile: str, compose_file: Path | None = None) -> dict[str, Any]:
    """The profile's services, as docker-compose.yml defines them."""
    services = yaml.safe_load((compose_file or COMPOSE_FILE).read_text())["services"]
    return {name: service for name, service in services.items()
            if profile in service.get("profiles", [])}


def compose_published(profile: str, compose_file: Path | None = None
                      ) -> list[tuple[str, ports.Port]]:
    """(service, host port) for every port the profile's services publish, from
    docker-compose.yml."""
    found = []
    for name, service in compose_services(profile, compose_file).items():
        for entry in service.get("ports", []):
            published = _published(entry)
            if published is not None:
                address, port = published
                found.append((name, ports.Port(port, f"published by Compose service {name}",
                                               address)))
    return found


def compose_ports(profile: str, compose_file: Path | None = None) -> list[ports.Port]:
    return [port for _service, port in compose_published(profile, compose_file)]


def _profile_containers(profile: str) -> list[tuple[str, str, bool, str]]:
    """(service, container id, running, Compose project) of each container of the profile's
    services, stopped ones included (`ps` lists every profile's)."""
    ids = _compose_quiet(profile, "ps", "-q").stdout.split()
    if not ids:
        return []
    inspect = subprocess.run(
        ["docker", "inspect", "--format",
         '{{.Id}} {{.State.Running}} {{index .Config.Labels "com.docker.compose.service"}} '
         '{{index .Config.Labels "com.docker.compose.project"}}',
         *ids], capture_output=True, text=True, check=False).stdout
    services = compose_services(profile)
    found = []
    for line in inspect.splitlines():
        container, state, service, project = [*line.split(), "", "", "", ""][:4]
        if service in services:
            found.append((service, container, state == "true", project))
    return found


def compose_containers(profile: str) -> dict[str, str]:
    """The profile's running containers of this project: service name -> container id."""
    return {service: container
            for service, container, running, _ in _profile_containers(profile) if running}


def _publisher_ids(port: int) -> list[str]:
    out = subprocess.run(["docker", "ps", "--no-trunc", "--filter", f"publish={port}",
                          "--format", "{{.ID}}"], capture_output=True, text=True, check=False)
    return out.stdout.split()


def own_published_ports(profile: str) -> dict[int, str]:
    """Host ports that this project's containers of `profile` already publish (an earlier
    run left them up to explore): `compose up` takes them over, so they are not in the
    way. port -> container."""
    if shutil.which("docker") is None:
        return {}
    ours = set(compose_containers(profile).values())
    return {p.port: container for p in compose_ports(profile)
            for container in _publisher_ids(p.port) if container in ours}


def check_compose_owner(profile: str, port: int) -> None:
    """DemoError unless host port `port` is published by the container this demo started
    for the service the Compose file publishes it from."""
    service = next((name for name, p in compose_published(profile) if p.port == port), None)
    container = compose_containers(profile).get(service or "")
    if container is None:
        raise DemoError(f"the Compose service {service} is not running; see "
                        f"`docker-compose --profile {profile} logs {service}`")
    publishers = _publisher_ids(port)
    if container not in publishers:
        raise DemoError(f"port {port} is held by {ports.holder(port)}, not by the {service} "
                        "container this demo started")


def check_compose_running(profile: str, services: list[str]) -> None:
    """DemoError when a container the demo started is no longer running."""
    running = compose_containers(profile)
    gone = [service for service in services if service not in running]
    if gone:
        raise DemoError(f"Compose service(s) {', '.join(gone)} stopped during the demo; see "
                        f"`docker-compose --profile {profile} logs {gone[0]}`")


def _remove_profile(profile: str) -> None:
    """Stop and remove the profile's containers and its named volumes, and nothing of the
    other profiles (another pattern's demo may be up in the same Compose project)."""
    existing = _profile_containers(profile)
    if not existing:
        return
    services = compose_services(profile)
    project = existing[0][3]
    removed = _compose_quiet(profile, "rm", "--stop", "--force", "-v", *services)
    if removed.returncode != 0:
        raise DemoError(f"could not remove the {profile} containers: "
                        f"{(removed.stderr.strip().splitlines() or ['?'])[-1]}")
    volumes = sorted({str(entry).split(":", 1)[0] for service in services.values()
                      for entry in service.get("volumes", [])
                      if not str(entry).startswith((".", "/", "~"))})
    if project and volumes:
        subprocess.run(["docker", "volume", "rm", *(f"{project}_{v}" for v in volumes)],
                       capture_output=True, check=False)


def _compose_down(profile: str) -> None:
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"demo-{profile}-compose.log"
    log.write_text(_compose_quiet(profile, "logs", "--no-color").stdout)
    say(f"the containers' output: {log.relative_to(ROOT)}")
    _remove_profile(profile)


def _remove_earlier_run(profile: str) -> None:
    """What an earlier run of the profile left up (to explore): a demo starts from a fresh
    pod, as on kind. Kept, its volumes would count the earlier run's lines as this run's,
    or bring a failed-over primary back next to its promoted standby."""
    if _profile_containers(profile):
        say(f"removing what an earlier {profile} demo left on Compose: a demo starts afresh")
        _remove_profile(profile)


def compose_up(profile: str) -> str:
    tag = build_images()
    # From here, any abnormal end (a failed `up`, a signal, a service never ready) removes
    # the project's containers and volumes instead of leaving them half-started.
    lifecycle.on_abort(f"the Compose {profile} project", lambda: _compose_down(profile))
    _remove_earlier_run(profile)
    compose(profile, "up", "-d", tag=tag)
    return tag


def clean(patterns: list[str], on_podman: list[str] | None = None) -> None:
    """Remove what any demo left: the Compose project's containers and volumes, kind
    namespaces (the cluster stays: `make kind-down` deletes it), the pods of `on_podman`
    (default: every pattern) that this state directory's demos played, and the podman
    network. A pattern's own leftovers are its module's clean()."""
    if compose_command() is not None:
        existing = _compose_quiet(patterns, "ps", "-q").stdout.split()
        down = _compose_quiet(patterns, "down", "-v", "--remove-orphans")
        if down.returncode != 0:
            said = (down.stderr.strip().splitlines() or ["?"])[-1]
            say(f"docker-compose down failed (exit {down.returncode}): {said}")
        elif existing:
            say(f"removed the demos' {len(existing)} Compose containers and their volumes")
    if shutil.which("kind") and use_kind_cluster(create=False):
        for pattern in patterns:
            overlay = Path("k8s") / pattern / "kind"
            if (ROOT / overlay).is_dir():  # lab 0's (k8s/0-pod) is demo/pod.py's clean()
                subprocess.run(["kubectl", "delete", "-k", str(overlay), "--ignore-not-found"],
                               cwd=ROOT)
    # Only the pods this state directory's demos played: another's are not ours to remove.
    played = [pattern for pattern in (patterns if on_podman is None else on_podman)
              if pattern in processes.played("podman")]
    if played and shutil.which("podman"):
        try:
            for pattern in played:
                _podman_down(pattern)
            if podman.remove_network():
                say(f"removed the podman network {podman.NETWORK}")
        except DemoError as error:
            say(f"could not remove what the demos left on podman: {error}")
