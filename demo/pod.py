"""Lab 0, the pod itself: two containers, `main` (legacy-app: serves HTTP, writes
access.log) and `sidecar` (log-adapter: reads that file), sharing one volume, one network
namespace and one life. `make demo-pod` shows each shared thing from both containers and
checks it, then how they start and stop.

The steps are the same on every runtime; a Lab says how to do each one there: run Python
inside a container, count its restarts, end its main process."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from demo import console, containers
from demo.errors import DemoError
from demo.local import LocalPod, demo_seconds, say, wait_http
from demo.ports import PROC, Port, session_members
from demo.timing import poll

NAMESPACE = "podpatterns-pod"
GUIDE = "patterns/0-pod/README.md"
PROFILE = "pod"
OVERLAY = "0-pod"  # k8s/0-pod/kind
POD = "two-containers"
# Host ports, as docker-compose.yml publishes them (a unit test holds the two together);
# the local processes listen on them too. 8080 to 8084 belong to the other demos.
PORTS = {"app": 8085, "sidecar": 9105}
# Where each container listens in the pod (the manifest's and the Compose file's).
IN_POD = {"main": 8080, "sidecar": 9103}
LOG_DIR = "/var/log/app"
ACCESS_LOG = "access.log"
COMPOSE_SERVICES = {"main": "pod-main", "sidecar": "pod-sidecar"}


def url(name: str) -> str:
    return f"http://127.0.0.1:{PORTS[name]}"


def ports(runtime: str) -> list[Port]:
    """What the demo listens on in `runtime` (Compose: docker-compose.yml says; on kind it
    reaches the pod with `kubectl exec` only)."""
    if runtime == "kind":
        return []
    return [Port(PORTS["app"], "legacy-app (main)"),
            Port(PORTS["sidecar"], "log-adapter admin (sidecar)")]


def _in_container(code: str) -> str:
    """Python source for `python3 -c` in a container: the images have python3, not curl."""
    return ("import json, os, urllib.request as u\n"
            "def get(url):\n"
            "    return u.urlopen(url, timeout=10).read().decode()\n" + code)


class Lab:
    """How to do each step on one runtime. Containers are `main` and `sidecar`."""

    runtime = ""
    how_main_ends = ""  # how end_main() ends main's process, in words
    log_path = f"{LOG_DIR}/{ACCESS_LOG}"  # the shared file, where both containers mount it
    ports = IN_POD  # where each container listens, as the other reaches it on localhost

    def inode(self, container: str) -> int:
        """The inode of access.log, as `container` sees it."""
        raise NotImplementedError

    def get_other(self, container: str) -> str:
        """From inside `container`, what the other container answers on localhost."""
        raise NotImplementedError

    def request(self, path: str) -> None:
        """One request to main (from the host, or from inside the pod on kind)."""
        raise NotImplementedError

    def access_log(self) -> str:
        """access.log as the sidecar reads it."""
        raise NotImplementedError

    def sidecar_status(self) -> dict[str, Any]:
        """The sidecar's /status: what it has read of the shared file."""
        raise NotImplementedError

    def restarts(self) -> dict[str, int]:
        raise NotImplementedError

    def end_main(self) -> None:
        """End main's process; return once the runtime has restarted it and it is ready."""
        raise NotImplementedError


# --- the steps --------------------------------------------------------------------------


def show_shared_volume(lab: Lab) -> int:
    marker = f"/written-by-main-read-by-sidecar-{uuid.uuid4().hex[:8]}"
    say(f"1. one volume: a request to {marker} makes main write a line to {lab.log_path}; "
        "the sidecar reads the same file")
    lab.request(marker)
    inodes = {name: lab.inode(name) for name in ("main", "sidecar")}
    for name, inode in inodes.items():
        say(f"   {name:<7} sees {lab.log_path} as inode {inode}")
    if inodes["main"] != inodes["sidecar"]:
        raise DemoError(f"main and sidecar see different files ({inodes}): the volume is not "
                        "shared")
    line = wait_for(lambda: next((ln for ln in lab.access_log().splitlines() if marker in ln),
                                 None), f"the line of {marker} in the sidecar's view")
    say(f"   the sidecar reads main's line: {line}")
    return inodes["main"]


def show_localhost(lab: Lab) -> None:
    say("2. one network: each container reaches the other on localhost")
    status = json.loads(lab.get_other("main"))
    say(f"   from main   : http://localhost:{lab.ports['sidecar']}/status (the sidecar) says "
        f"it has read {status['inputs'][0]['parsed']} lines of {ACCESS_LOG}")
    answer = lab.get_other("sidecar").strip()
    say(f"   from sidecar: http://localhost:{lab.ports['main']}/healthz (main) answers "
        f"{answer[:80]!r}")


def show_restart(lab: Lab, inode: int) -> dict[str, int]:
    before = lab.restarts()
    say(f"3. one life, own restarts: main's process ends ({lab.how_main_ends}); "
        f"restarts before: {before}")
    lab.end_main()
    after = lab.restarts()
    say(f"   restarts after: {after}")
    if after["main"] != before["main"] + 1 or after["sidecar"] != before["sidecar"]:
        raise DemoError(f"expected main alone to restart once: before {before}, after {after}")
    kept = lab.inode("main")
    if kept != inode:
        raise DemoError(f"the restarted main sees another {ACCESS_LOG} (inode {kept}, was "
                        f"{inode}): the volume did not outlive the container")
    say(f"   the volume outlived main's restart: main writes to inode {kept} again")
    return after


def drained(lab: Lab) -> tuple[int, int]:
    """Until the sidecar has read every line of access.log: (lines read, lines in file)."""
    def counts() -> tuple[int, int] | None:
        lines = lab.access_log().count("\n")
        read = int(lab.sidecar_status()["inputs"][0]["parsed"])
        return (read, lines) if read >= lines else None
    return wait_for(counts, "the sidecar to read the last line of access.log")


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    value = poll(predicate, timeout)
    if not value:
        raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")
    return value


def verdict(runtime: str, inode: int, restarts: dict[str, int], stop: str) -> None:
    say(f"verdict ({runtime}): one file (inode {inode}) seen by both containers; each reached "
        f"the other on localhost; main restarted alone (restarts: main {restarts['main']}, "
        f"sidecar {restarts['sidecar']}); {stop}")


# --- local processes --------------------------------------------------------------------


def open_inode(pid: int, path: Path) -> int | None:
    """The inode of `path` as held open by the process `pid` or one it forked (/proc on
    Linux); None if none of them holds it."""
    for member in sorted(session_members(pid)):
        try:
            fds = list((PROC / str(member) / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == str(path):
                    return os.stat(fd).st_ino
            except OSError:
                continue
    return None


class LocalLab(Lab):
    """Two processes and a directory. The runner plays the kubelet: it restarts main."""

    runtime = "local"
    how_main_ends = "SIGKILL to its process group, a crash; the runner restarts it"
    NAMES = {"main": "legacy-app", "sidecar": "log-adapter"}

    def __init__(self, pod: LocalPod) -> None:
        self.pod = pod
        self.shared = pod.path("shared-volume")
        self.log_path = str(self.shared / ACCESS_LOG)
        self.ports = {"main": PORTS["app"], "sidecar": PORTS["sidecar"]}
        self.counts = {"main": 0, "sidecar": 0}

    def start_sidecar(self) -> None:
        self.pod.start(self.NAMES["sidecar"], "patterns.adapter.log_adapter", {
            "ADAPTER_INPUTS": f"combined={self.shared / ACCESS_LOG}",
            "ADAPTER_STATE_DIR": str(self.pod.path("sidecar-state")),
            "ADAPTER_HTTP_HOST": "127.0.0.1", "ADAPTER_HTTP_PORT": str(PORTS["sidecar"]),
            "OTEL_SERVICE_NAME": "legacy-app",
        }, listens_on=[PORTS["sidecar"]])
        self.pod.wait_ready(self.NAMES["sidecar"], f"{url('sidecar')}/readyz")

    def start_main(self) -> None:
        self.pod.start(self.NAMES["main"], "patterns.adapter.legacy_app", {
            "LEGACY_APP_HOST": "127.0.0.1", "LEGACY_APP_PORT": str(PORTS["app"]),
            "LEGACY_APP_LOG_DIR": str(self.shared),
        }, listens_on=[PORTS["app"]])
        self.pod.wait_ready(self.NAMES["main"], f"{url('app')}/healthz")

    def inode(self, container: str) -> int:
        proc = self.pod.procs[self.NAMES[container]]
        path = self.shared / ACCESS_LOG
        held = wait_for(lambda: open_inode(proc.pid, path) if PROC.is_dir() else -1,
                        f"{self.NAMES[container]} to hold {path} open")
        return held if held != -1 else path.stat().st_ino  # no /proc: one path, one file

    def get_other(self, container: str) -> str:
        # One machine, one loopback: what the runner reaches is what either process would.
        return requests.get(url("sidecar") + "/status" if container == "main"
                            else url("app") + "/healthz", timeout=5).text

    def request(self, path: str) -> None:
        requests.get(url("app") + path, timeout=5)

    def access_log(self) -> str:
        return (self.shared / ACCESS_LOG).read_text(errors="replace")

    def sidecar_status(self) -> dict[str, Any]:
        return dict(requests.get(f"{url('sidecar')}/status", timeout=5).json())

    def restarts(self) -> dict[str, int]:
        return dict(self.counts)

    def end_main(self) -> None:
        name = self.NAMES["main"]
        pid = self.pod.procs[name].pid
        os.killpg(pid, signal.SIGKILL)
        code = self.pod.stop(name)
        say(f"   {name} (pid {pid}) ended: {_exit(code)}; the sidecar runs on "
            f"(pid {self.pod.procs[self.NAMES['sidecar']].pid}); starting {name} again")
        self.pod.check_running()
        self.counts["main"] += 1
        self.start_main()


def _exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit {code}"


def run_local() -> None:
    with LocalPod("pod") as pod:
        lab = LocalLab(pod)
        say(f"the pod's shared volume (its emptyDir): {lab.shared}")
        say("the sidecar starts first and main once the sidecar is ready, as with a native "
            "sidecar")
        lab.start_sidecar()
        lab.start_main()
        inode = show_shared_volume(lab)
        show_localhost(lab)
        say("   (local processes: every process of this machine shares that loopback; in a "
            "pod only its containers do)")
        restarts = show_restart(lab, inode)
        explore_local(lab)
        wait_for_user(demo_seconds())
        say("4. stop order: main first; the sidecar reads main's last lines, then stops")
        lab.request("/last-request-before-main-stops")
        code = pod.stop(LocalLab.NAMES["main"])
        pod.check_running()
        read, lines = drained(lab)
        say(f"   main stopped ({_exit(code)}); the sidecar, still running, read {read} of "
            f"{lines} lines")
        code = pod.stop(LocalLab.NAMES["sidecar"])
        if code != 0:
            raise DemoError(f"the sidecar exited with {code} on SIGTERM")
        say(f"   then the sidecar stopped (exit {code})")
        verdict("local", inode, restarts,
                f"main stopped first and the sidecar read all {lines} of its lines before it "
                "stopped")


def explore_local(lab: LocalLab) -> None:
    say("explore while it runs:\n"
        f"  ls -li {lab.shared}\n"
        f"  curl -s {url('app')}/traffic?n=20; curl -s {url('sidecar')}/status\n"
        f"  tail -n 1 {lab.pod.log_of(LocalLab.NAMES['sidecar'])}   # main's last line, as "
        "JSON")


def wait_for_user(seconds: float) -> None:
    say("Ctrl-C stops the pod: main first, then the sidecar"
        + ("" if not seconds else f" (or in {seconds:.0f}s)"))
    started = time.monotonic()
    try:
        while not seconds or time.monotonic() - started < seconds:
            time.sleep(0.2)
    except KeyboardInterrupt:
        say("Ctrl-C: stopping")


# --- containers: Compose and kind -------------------------------------------------------


class ContainerLab(Lab):
    def python(self, container: str, code: str, check: bool = True) -> str:
        """Run `code` with python3 in `container`; its stdout. With `check`, a failure is
        a DemoError."""
        raise NotImplementedError

    def reading(self, container: str, code: str, what: str, timeout: float = 30.0) -> str:
        """`python(container, code)` for code that only reads, tried again for `timeout`
        seconds: a busy machine can make one exec or one request fail. What fails for
        that long is a DemoError naming `what` and the last error."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.python(container, code)
            except DemoError as error:
                if time.monotonic() > deadline:
                    raise DemoError(f"{what}: still failing after {timeout:.0f}s: {error}"
                                    ) from None
            time.sleep(1)

    def inode(self, container: str) -> int:
        return int(self.reading(container, f"print(os.stat('{LOG_DIR}/{ACCESS_LOG}').st_ino)",
                                f"the inode of {ACCESS_LOG} in {container}"))

    def get_other(self, container: str) -> str:
        other = "sidecar" if container == "main" else "main"
        path = "/status" if other == "sidecar" else "/healthz"
        return self.reading(container, f"print(get('http://localhost:{IN_POD[other]}{path}'))",
                            f"{other} on {container}'s localhost")

    def access_log(self) -> str:
        return self.reading("sidecar", f"print(open('{LOG_DIR}/{ACCESS_LOG}').read(), end='')",
                            f"{ACCESS_LOG} in the sidecar")

    def sidecar_status(self) -> dict[str, Any]:
        # Asked inside the sidecar itself: main may be stopped (step 4).
        return dict(json.loads(self.reading(
            "sidecar", f"print(get('http://localhost:{IN_POD['sidecar']}/status'))",
            "the sidecar's /status")))

    def end_main(self) -> None:
        before = self.restarts()["main"]
        # SIGTERM: from inside, the kernel ignores a SIGKILL to the container's PID 1. Not
        # checked: the exec may end with the container it just stopped.
        self.python("main", "import signal; os.kill(1, signal.SIGTERM)", check=False)
        wait_for(lambda: self.restarts()["main"] > before and self.main_ready(),
                 "main to be restarted and ready", timeout=120)

    def main_ready(self) -> bool:
        raise NotImplementedError


class ComposeLab(ContainerLab):
    runtime = "compose"
    how_main_ends = "SIGTERM to its PID 1; `restart: unless-stopped` restarts it"

    def ids(self) -> dict[str, str]:
        running = containers.compose_containers(PROFILE)
        return {name: running.get(service, "") for name, service in COMPOSE_SERVICES.items()}

    def container(self, name: str) -> str:
        found = self.ids()[name]
        if not found:
            raise DemoError(f"the Compose service {COMPOSE_SERVICES[name]} is not running; see "
                            f"`docker-compose --profile {PROFILE} logs {COMPOSE_SERVICES[name]}`")
        return found

    def python(self, container: str, code: str, check: bool = True) -> str:
        result = subprocess.run(["docker", "exec", self.container(container), "python3", "-c",
                                 _in_container(code)], capture_output=True, text=True,
                                timeout=60, check=False)
        if check and result.returncode != 0:
            said = (result.stderr.strip().splitlines() or ["?"])[-1]
            raise DemoError(f"python3 in {COMPOSE_SERVICES[container]} failed: {said}")
        return result.stdout

    def request(self, path: str) -> None:
        requests.get(url("app") + path, timeout=5)

    def inspect(self, name: str) -> dict[str, Any]:
        out = subprocess.run(["docker", "inspect", self.container(name)], capture_output=True,
                             text=True, check=True).stdout
        return dict(json.loads(out)[0])

    def restarts(self) -> dict[str, int]:
        return {name: int(self.inspect(name)["RestartCount"]) for name in COMPOSE_SERVICES}

    def main_ready(self) -> bool:
        health = self.inspect("main")["State"].get("Health") or {}
        return bool(health.get("Status") == "healthy")


def wait_compose_ready() -> None:
    """Until both answer through the ports this demo's own pod-sidecar publishes."""
    for name, path in (("sidecar", "/readyz"), ("app", "/healthz")):
        wait_http(url(name) + path,
                  check=functools.partial(containers.check_compose_owner, PROFILE, PORTS[name]))


def run_compose() -> None:
    tag = containers.compose_up(PROFILE)
    wait_compose_ready()
    lab = ComposeLab()
    inode = show_shared_volume(lab)
    show_localhost(lab)
    restarts = show_restart(lab, inode)
    say("4. stop order: `docker-compose stop` stops main first (it depends on the sidecar)")
    lab.request("/last-request-before-main-stops")
    ids = lab.ids()
    containers.compose(PROFILE, "stop", COMPOSE_SERVICES["main"], tag=tag)
    containers.check_compose_running(PROFILE, [COMPOSE_SERVICES["sidecar"]])
    read, lines = drained(lab)
    say(f"   main stopped; the sidecar, still running, read {read} of {lines} lines")
    containers.compose(PROFILE, "stop", COMPOSE_SERVICES["sidecar"], tag=tag)
    states = {name: _state(container) for name, container in ids.items()}
    if _instant(states["main"]["FinishedAt"]) >= _instant(states["sidecar"]["FinishedAt"]) \
            or any(state["ExitCode"] != 0 for state in states.values()):
        raise DemoError(f"expected main to exit 0 before the sidecar exits 0: {states}")
    say(f"   main exited {states['main']['ExitCode']} at {states['main']['FinishedAt']}, "
        f"the sidecar {states['sidecar']['ExitCode']} at {states['sidecar']['FinishedAt']}")
    verdict("compose", inode, restarts,
            f"main stopped first and the sidecar read all {lines} of its lines before it "
            "stopped")
    # New containers, as a new pod would be: the stopped ones keep the health their last
    # checks gave while they stopped, which `depends_on: service_healthy` refuses.
    say("a new pod from the same definition, to explore (the sidecar first: main waits "
        "for its healthcheck)")
    containers.compose(PROFILE, "up", "-d", "--force-recreate", tag=tag)
    wait_compose_ready()
    explore("compose")


def _instant(stamp: str) -> tuple[str, str]:
    """Docker's RFC 3339 times, comparable: their fractions drop trailing zeros."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return whole, fraction.ljust(9, "0")


def _state(container: str) -> dict[str, Any]:
    out = subprocess.run(["docker", "inspect", "--format", "{{json .State}}", container],
                         capture_output=True, text=True, check=True).stdout
    state = json.loads(out)
    return {"ExitCode": state["ExitCode"], "FinishedAt": state["FinishedAt"]}


class KindLab(ContainerLab):
    runtime = "kind"
    how_main_ends = "SIGTERM to its PID 1; the kubelet restarts it (restartPolicy: Always)"

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", "-n", NAMESPACE, *args], capture_output=True,
                              text=True, timeout=120, check=check)

    def python(self, container: str, code: str, check: bool = True) -> str:
        result = self.kubectl("exec", POD, "-c", container, "--", "python3", "-c",
                              _in_container(code), check=False)
        if check and result.returncode != 0:
            said = (result.stderr.strip().splitlines() or ["?"])[-1]
            raise DemoError(f"python3 in container {container} of pod {POD} failed: {said}")
        return result.stdout

    def request(self, path: str) -> None:
        # No port-forward: the sidecar asks main, on the pod's localhost.
        target = f"http://localhost:{IN_POD['main']}{path}"
        self.python("sidecar", f"""
try:
    get({target!r})
except OSError:
    pass  # a 404 is still a request main logged""")

    def statuses(self) -> dict[str, dict[str, Any]]:
        pod = json.loads(self.kubectl("get", "pod", POD, "-o", "json").stdout)
        return {s["name"]: s for s in pod["status"].get("containerStatuses", [])}

    def restarts(self) -> dict[str, int]:
        return {name: int(status["restartCount"]) for name, status in self.statuses().items()}

    def main_ready(self) -> bool:
        return bool(self.statuses()["main"].get("ready"))


def run_kind() -> None:
    tag = containers.build_images()
    containers.run(["make", "--no-print-directory", "kind-load", f"IMAGE_TAG={tag}",
                    f"KIND_CLUSTER={containers.KIND_CLUSTER}"])
    rendered = containers.run(["kubectl", "kustomize", str(Path("k8s") / OVERLAY / "kind")],
                              capture_output=True).stdout
    # The overlay names the stable tag (:dev); the demo pins exactly what it just built.
    rendered = containers.IMAGE_RE.sub(rf"\1:{tag}", rendered)
    containers.kind_teardown_on_abort(OVERLAY)
    # A Pod cannot take new images in place: every run starts a fresh one.
    containers.run(["kubectl", "-n", NAMESPACE, "delete", "pod", POD, "--ignore-not-found",
                    "--wait=true"])
    apply_and_wait(rendered)
    lab = KindLab()
    inode = show_shared_volume(lab)
    show_localhost(lab)
    restarts = show_restart(lab, inode)
    say("4. delete the pod: both containers get SIGTERM at once (they are both regular "
        "containers; a native sidecar would get it after main: patterns/sidecar/README.md, "
        "step 8)")
    uid = lab.kubectl("get", "pod", POD, "-o", "jsonpath={.metadata.uid}").stdout
    containers.run(["kubectl", "-n", NAMESPACE, "delete", "pod", POD, "--wait=true"])
    if lab.kubectl("get", "pod", POD, check=False).returncode == 0:
        raise DemoError(f"pod {POD} is still there after `kubectl delete --wait`")
    say(f"   pod {POD} (uid {uid}) is gone, with both its containers and its emptyDir")
    verdict("kind", inode, restarts, "deleting the pod ended both containers")
    say("a new pod from the same definition, to explore (a new emptyDir: the lines main "
        "wrote so far are gone)")
    apply_and_wait(rendered)
    explore("kind")


def apply_and_wait(rendered: str) -> None:
    containers.run(["kubectl", "apply", "-f", "-"], input=rendered)
    containers.run(["kubectl", "-n", NAMESPACE, "wait", "--for=condition=Ready", f"pod/{POD}",
                    "--timeout=300s"])


def explore(runtime: str) -> None:
    if runtime == "kind":
        kubectl = f"kubectl -n {NAMESPACE}"
        console.explore([f"{kubectl} get pod {POD}",
                         f"{kubectl} exec {POD} -c main -- ls -li {LOG_DIR}",
                         f"{kubectl} exec {POD} -c sidecar -- ls -li {LOG_DIR}",
                         f"{kubectl} logs {POD} -c sidecar --tail 1"], GUIDE)
    else:
        console.explore([
            "export IMAGE_TAG=dev   # docker-compose needs it set; the demo's build tagged :dev",
            f"docker-compose --profile {PROFILE} ps",
            f"docker-compose exec pod-main ls -li {LOG_DIR}",
            f"docker-compose exec pod-sidecar ls -li {LOG_DIR}",
            f"curl -s {url('app')}/traffic?n=20; curl -s {url('sidecar')}/status"], GUIDE)


def clean() -> None:
    """`make demo-clean`: lab 0's pod on kind (the runtimes' own clean() looks for
    k8s/<pattern>/kind, and this lab's folder is k8s/0-pod)."""
    import shutil

    if shutil.which("kind") and containers.use_kind_cluster(create=False):
        subprocess.run(["kubectl", "delete", "-k", str(Path("k8s") / OVERLAY / "kind"),
                        "--ignore-not-found"], cwd=containers.ROOT, check=False)
