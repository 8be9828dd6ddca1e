"""The container runtimes: build and load images, bring a pattern up on kind or Compose,
forward ports, tear down. Pattern modules only say what to show once it runs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from demo.local import ROOT, say
from demo.runtimes import compose_command

# The cluster `make kind-up` creates; the Makefile exports KIND_CLUSTER to the demo.
KIND_CLUSTER = os.environ.get("KIND_CLUSTER", "podpatterns")
IMAGE_RE = re.compile(r"(image:\s*podpatterns/[a-z0-9-]+):[A-Za-z0-9_.-]+")


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    say("$ " + " ".join(argv))
    return subprocess.run(argv, check=True, text=True, cwd=ROOT, **kwargs)


def build_images() -> str:
    """`make images` (it picks the base image and says which); returns the tag it gave the
    images, as it wrote it in build/images.json (asking for the tag again could give
    another one: uncommitted edits made meanwhile change it)."""
    run(["make", "--no-print-directory", "images"])
    return str(json.loads((ROOT / "build" / "images.json").read_text())["tag"])


def kind_cluster_exists() -> bool:
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


def kind_up(pattern: str, namespaces: list[str]) -> str:
    use_kind_cluster()
    tag = build_images()
    run(["make", "--no-print-directory", "kind-load", f"IMAGE_TAG={tag}",
         f"KIND_CLUSTER={KIND_CLUSTER}"])
    rendered = run(
        ["kubectl", "kustomize", str(Path("k8s") / pattern / "kind")], capture_output=True
    ).stdout
    # The overlay names a placeholder tag; the demo deploys exactly what it just built.
    rendered = IMAGE_RE.sub(rf"\1:{tag}", rendered)
    # A Job's pod template is immutable: a re-run with new image tags replaces the Job.
    for namespace in namespaces:
        run(["kubectl", "-n", namespace, "delete", "job", "--all", "--ignore-not-found"])
    run(["kubectl", "apply", "-f", "-"], input=rendered)
    for namespace in namespaces:
        run(["kubectl", "-n", namespace, "wait", "--for=condition=Available",
             "deployment", "--all", "--timeout=300s"])
    return tag


@contextlib.contextmanager
def port_forward(namespace: str, target: str, local: int, remote: int) -> Iterator[None]:
    """`kubectl port-forward` for as long as the block runs."""
    argv = ["kubectl", "-n", namespace, "port-forward", target, f"{local}:{remote}"]
    say("$ " + " ".join(argv) + " &")
    # Its own session: Ctrl-C in the terminal stops the demo, which then ends the
    # forward itself, instead of killing the forward while the demo still uses it.
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        time.sleep(2)
        if proc.poll() is not None:
            error = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"port-forward failed: {error}")
        yield
    finally:
        proc.terminate()
        proc.wait()


def compose(profile: str, *args: str, tag: str, **kwargs) -> subprocess.CompletedProcess[str]:
    command = compose_command()
    if command is None:
        raise SystemExit("no `docker compose` or `docker-compose` found")
    env = {**os.environ, "IMAGE_TAG": tag}
    return run([*command, "--profile", profile, *args], env=env, **kwargs)


def compose_up(profile: str) -> str:
    tag = build_images()
    compose(profile, "up", "-d", tag=tag)
    return tag


def clean(patterns: list[str]) -> None:
    """Remove what any demo left: Compose projects, kind namespaces (the cluster stays:
    `make kind-down` deletes it). A pattern's own leftovers are its module's clean()."""
    command = compose_command()
    if command is not None:
        for pattern in patterns:
            subprocess.run([*command, "--profile", pattern, "down", "-v", "--remove-orphans"],
                           cwd=ROOT, env={**os.environ, "IMAGE_TAG": "none"})
    if shutil.which("kind") and use_kind_cluster(create=False):
        for pattern in patterns:
            subprocess.run(["kubectl", "delete", "-k", str(Path("k8s") / pattern / "kind"),
                            "--ignore-not-found"], cwd=ROOT)
