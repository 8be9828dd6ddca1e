"""The ambassador demo: notes app -> localhost:5432 -> db-ambassador sidecar -> TLS ->
PostgreSQL primary (or, after `make ambassador-failover`, the promoted standby).

The demo writes its secrets under .demo/ambassador/ (gitignored, never committed): the
postgres password and a CA with the servers' certificate, renewed before they expire.
`make ambassador-failover`, run in another terminal while the demo runs, stops the
primary and promotes the standby.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from demo import ROOT, console, containers, lifecycle, podman
from demo.errors import DemoError
from demo.local import LocalPod, demo_seconds, say, wait_http
from demo.ports import Port, free_port, in_use
from demo.processes import alive, identity
from demo.timing import every_second, how_long
from tests import pg  # the same PostgreSQL cluster code the tests use

DB_NAMESPACE = "podpatterns-db"
APP_NAMESPACE = "podpatterns-ambassador"
PROFILE = "ambassador"
# Host ports, as docker-compose.yml publishes them (a unit test holds the two together):
# the app on 8084 (8080 to 8082 belong to the other demos), the ambassador's admin on 9104.
PORTS = {"app": 8084, "admin": 9104}
# On podman: (workload, containerPort) of k8s/ambassador -> host port, on 127.0.0.1.
PODMAN_PUBLISH = {("notes-app", 8080): PORTS["app"], ("notes-app", 9104): PORTS["admin"]}
# The pod's containers: the databases are the outside world, whose failure is the lesson.
SERVICES = ["ambassador-main", "ambassador-ambassador"]
# The lab's secrets and state stay in .demo/ambassador whatever DEMO_STATE_DIR says: the
# Compose file mounts them from there, and the lab guide reads them there. (So a guide
# session's `make demo-clean` also stops a local ambassador demo of the user's.)
SECRETS = ROOT / ".demo" / "ambassador"
STATE = SECRETS / "state.json"
PGDATA = "/var/lib/pgdata/data"
# The demo's CA and server certificate last 30 days (tests/pg.py make_pki): a demo that
# starts with fewer days left makes new ones, so that none expires while it runs (verify-
# full would then fail, and notes-app never become ready).
RENEW_WITHIN_DAYS = 7
# Every name a database server is reached by, in any runtime: the certificate covers all.
SERVER_NAMES = [
    "localhost", "127.0.0.1",
    "ambassador-db-primary", "ambassador-db-standby",
    f"db-primary.{DB_NAMESPACE}.svc", f"db-standby.{DB_NAMESPACE}.svc",
    f"db-primary.{DB_NAMESPACE}.svc.cluster.local", f"db-standby.{DB_NAMESPACE}.svc.cluster.local",
]  # fmt: skip


@dataclass(frozen=True)
class DemoSecrets:
    password: str
    pki: pg.Pki
    renewed: bool  # the CA and certificate of an earlier run were replaced


def prepare_secrets() -> DemoSecrets:
    """The password and the CA/server certificate, made once and kept in .demo/; the
    certificates made again when missing or within RENEW_WITHIN_DAYS of expiring."""
    SECRETS.mkdir(parents=True, exist_ok=True)
    SECRETS.chmod(0o700)
    password_file = SECRETS / "password"
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(24))
        say(f"generated the database password: {password_file}")
    pki_dir = SECRETS / "pki"
    why = _pki_problem(pki_dir)
    renewed = why is not None and (pki_dir / "server.crt").exists()
    if why is not None:
        pg.make_pki(pki_dir, SERVER_NAMES, ca_name="podpatterns ambassador demo CA")
        say(f"generated a CA and the servers' certificate ({why}): {pki_dir}")
    # Compose bind-mounts these files into containers running as uid 10001; .demo/ itself
    # stays private to you (0700).
    for name in ("password", "pki/ca.crt", "pki/server.crt", "pki/server.key"):
        (SECRETS / name).chmod(0o644)
    pki = pg.Pki(pki_dir / "ca.crt", pki_dir / "server.crt", pki_dir / "server.key")
    return DemoSecrets(password_file.read_text().strip(), pki, renewed)


def _pki_problem(pki_dir: Path) -> str | None:
    """Why the certificates in `pki_dir` must be made again, or None."""
    for name in ("ca.crt", "server.crt", "server.key"):
        if not (pki_dir / name).exists():
            return f"no {name} yet"
    for name in ("ca.crt", "server.crt"):
        try:
            check = subprocess.run(["openssl", "x509", "-noout", "-in", str(pki_dir / name),
                                    "-checkend", str(RENEW_WITHIN_DAYS * 86400)],
                                   capture_output=True, text=True, check=False)
        except OSError as error:
            raise DemoError(f"the ambassador demo needs openssl: {error}") from None
        if check.returncode != 0:
            return (f"{name} expires within {RENEW_WITHIN_DAYS} days"
                    if "will expire" in check.stdout else f"{name} is unreadable")
    return None


def save_state(**state: object) -> None:
    STATE.write_text(json.dumps(state, indent=2))


def load_state() -> dict[str, object]:
    return json.loads(STATE.read_text()) if STATE.exists() else {}


def url(name: str) -> str:
    return f"http://127.0.0.1:{PORTS[name]}"


def ports(runtime: str) -> list[Port]:
    """What the demo listens on in `runtime` (Compose: docker-compose.yml says)."""
    if runtime == "kind":
        return [Port(PORTS["app"], "kubectl port-forward to notes-app"),
                Port(PORTS["admin"], "kubectl port-forward to the db-ambassador's admin")]
    if runtime == "podman":
        return [Port(PORTS["app"], "notes-app, published by podman"),
                Port(PORTS["admin"], "db-ambassador admin, published by podman")]
    # Local: the ambassador's own listener is 5432 when free, else another (it says so).
    return [Port(PORTS["app"], "notes-app"), Port(PORTS["admin"], "db-ambassador admin")]


def exercise(seconds: float, check: Callable[[], None]) -> None:
    """Write a note every second and show which server stored it (0 seconds: until Ctrl-C).
    `check()` raises when something the demo started is gone."""
    say("the app writes a note every second through localhost:5432; in another terminal:")
    say("    make ambassador-failover      # stop the primary, promote the standby")
    say(f"open {url('app')}/ for the notes, {url('admin')}/upstreams for the ambassador's "
        f"view ({how_long(seconds)})")
    count = itertools.count(1)
    every_second(seconds, check, lambda: write_and_tell(next(count)))


def write_and_tell(count: int, app: str | None = None) -> str:
    """Write note `count` through the app at `app` (default: the demo's app port), and say
    which server stored it."""
    app = app or url("app")
    try:
        reply = requests.post(f"{app}/notes", json={"body": f"note {count}"}, timeout=10)
        if reply.status_code != 201:
            detail = reply.json().get("detail", reply.text)
            return f"note {count}: HTTP {reply.status_code}: {detail}"
        note = reply.json()
        server = requests.get(f"{app}/db", timeout=10).json()
    except (requests.RequestException, ValueError) as exc:
        return f"note {count}: the app did not answer: {exc}"
    role = "standby, read-only" if server["in_recovery"] else "read-write"
    return (f"note #{note['id']} stored on server {server['server']!r} ({role}); "
            f"the app connected to {server['database_url_host']}:{server['database_url_port']}")


def watch_failover(app: str | None = None, timeout: float = 60) -> None:
    """After a failover: poll until the promoted standby stores the notes written through
    the app at `app` (default: the demo's app port: the runtime's checks before the
    failover made sure it is the demo's)."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count += 1
        line = write_and_tell(1000 + count, app)
        say(line)
        if "'standby' (read-write)" in line:
            say("failover done: the app never changed its configuration")
            return
        time.sleep(1)
    raise DemoError(f"the failover is done (the primary stopped, the standby promoted), but "
                    f"no write reached the promoted standby in {timeout:.0f}s; look at the "
                    f"ambassador's view, {url('admin')}/upstreams in the demo")


def _pick_port(preferred: int) -> int:
    for port in range(preferred, preferred + 100):
        if not in_use(port):
            return port
    raise DemoError(f"no free port from {preferred} to {preferred + 99}: free one")


# --- local processes ------------------------------------------------------------------------


def run_local() -> None:
    problem = pg.missing_prerequisite()
    if problem:
        raise DemoError(f"the local ambassador demo {problem}")
    demo_secrets = prepare_secrets()
    password, pki = demo_secrets.password, demo_secrets.pki
    listen = 5432 if not in_use(5432) else _pick_port(15432)
    if listen != 5432:
        say(f"localhost:5432 is taken on this machine; the ambassador listens on {listen}")
    workdir = pg.make_workdir("podpatterns-ambassador-")
    primary = pg.Cluster(workdir, "primary", _pick_port(55432), password)
    standby = pg.Cluster(workdir, "standby", _pick_port(primary.port + 1), password)
    # The servers' state first: `make demo-clean` stops them if this runner is killed.
    save_state(runtime="local", workdir=str(workdir), password_file=str(SECRETS / "password"),
               primary=primary.port, standby=standby.port,
               runner=os.getpid(), runner_identity=identity(os.getpid()))  # fmt: skip
    try:
        with LocalPod("ambassador") as pod:
            say(f"PostgreSQL primary on 127.0.0.1:{primary.port} (TLS on), data in "
                f"{primary.data}")
            primary.init(pki).start()
            say(f"streaming standby on 127.0.0.1:{standby.port} (pg_basebackup -R)")
            standby.init_standby_of(primary, pki).start()
            # The sidecar starts before the app, as a native sidecar does in Kubernetes.
            pod.start("db-ambassador", "patterns.ambassador.db_ambassador", {
                "AMBASSADOR_LISTEN": f"127.0.0.1:{listen}",
                "AMBASSADOR_UPSTREAMS": f"127.0.0.1:{primary.port},127.0.0.1:{standby.port}",
                "AMBASSADOR_HTTP_HOST": "127.0.0.1",
                "AMBASSADOR_HTTP_PORT": str(PORTS["admin"]),
                "AMBASSADOR_TLS_MODE": "verify-full", "AMBASSADOR_TLS_CA_FILE": str(pki.ca_cert),
                "AMBASSADOR_HEALTH_USER": "postgres",
                "AMBASSADOR_HEALTH_PASSWORD_FILE": str(SECRETS / "password"),
            }, listens_on=[listen, PORTS["admin"]])  # fmt: skip
            pod.wait_ready("db-ambassador", f"{url('admin')}/readyz")
            pod.start("notes-app", "patterns.ambassador.notes_app", {
                "NOTES_APP_HOST": "127.0.0.1", "NOTES_APP_PORT": str(PORTS["app"]),
                "DATABASE_URL": f"postgresql://postgres@localhost:{listen}/postgres",
                "PGPASSWORD": password,
            }, listens_on=[PORTS["app"]])  # fmt: skip
            pod.wait_ready("notes-app", f"{url('app')}/readyz")
            exercise(demo_seconds(), pod.check_running)
    finally:
        with lifecycle.shielded():
            _remove_local_servers(workdir)
        say("stopped both PostgreSQL servers and removed their data")


def _remove_local_servers(workdir: Path) -> None:
    """Stop the local demo's two PostgreSQL servers, delete their data and the state."""
    for name in ("primary", "standby"):
        with contextlib.suppress(Exception):
            pg.Cluster(workdir, name, 0, "").stop("fast")
    shutil.rmtree(workdir, ignore_errors=True)
    STATE.unlink(missing_ok=True)


def clean() -> None:
    """For `make demo-clean`: a local demo killed before its cleanup (SIGKILL, a crash)
    leaves both PostgreSQL servers running; and any demo leaves its state file."""
    state = load_state()
    if state.get("runtime") == "local":
        _remove_local_servers(Path(str(state["workdir"])))
    STATE.unlink(missing_ok=True)


def _local_clusters(state: dict[str, object]) -> tuple[pg.Cluster, pg.Cluster]:
    workdir = Path(str(state["workdir"]))
    if not workdir.is_dir():
        STATE.unlink(missing_ok=True)
        raise DemoError(f"the local demo that wrote {STATE} is gone ({workdir} no longer "
                        "exists); start `make demo-ambassador`")  # fmt: skip
    runner = state.get("runner")
    if runner is not None and not alive(int(str(runner)), str(state.get("runner_identity"))):
        raise DemoError(f"the local ambassador demo (pid {runner}) is no longer running; "
                        "`make demo-clean` removes what it left, then start "
                        "`make demo-ambassador`")  # fmt: skip
    password = Path(str(state["password_file"])).read_text().strip()
    return (pg.Cluster(workdir, "primary", int(str(state["primary"])), password),
            pg.Cluster(workdir, "standby", int(str(state["standby"])), password))


def _failover_local(state: dict[str, object]) -> None:
    primary, standby = _local_clusters(state)
    if primary.running():
        say(f"$ pg_ctl stop -m immediate -D {primary.data}   # the primary crashes")
        primary.stop("immediate")
    say(f"$ pg_ctl promote -D {standby.data}             # the standby takes over")
    standby.promote()


# What `make ambassador-failover` needs and cannot do, in one line each.
NOT_RUNNING = ("no {runtime} ambassador demo is running: start `make demo-ambassador` "
               "(DEMO_RUNTIME={runtime}) in another terminal, then run "
               "`make ambassador-failover` while it runs")  # fmt: skip
ALREADY_PROMOTED = ("the standby was already promoted by an earlier failover and the old "
                    "primary is gone, so no standby is left to take over (failing back "
                    "would mean rebuilding the old primary as a standby of the new one); for "
                    "another failover, start the demo again: `make demo-clean`, then "
                    "`make demo-ambassador`")  # fmt: skip


def _standby_status(runtime: str, state: dict[str, object]) -> str:
    """"standby" (a failover can promote it), "promoted" (a failover already did) or
    "absent" (no demo of that runtime runs)."""
    if runtime == "local":
        if not state:
            return "absent"
        _primary, standby = _local_clusters(state)
        if not standby.running():
            return "absent"
        return "standby" if (standby.data / "standby.signal").exists() else "promoted"
    is_standby = ["test", "-e", f"{PGDATA}/standby.signal"]
    if runtime == "podman":
        if shutil.which("podman") is None:
            return "absent"
        plan = _podman_plan()
        standby_container = plan.pod("db-standby").containers[0].container
        watched = [standby_container, *(c.container for c in plan.pod("notes-app").containers)]
        if any(podman.state(name)[0] != "running" for name in watched):
            return "absent"
        argv = ["podman", "exec", standby_container, *is_standby]
    elif runtime == "compose":
        running = containers.compose_containers(PROFILE)
        if not {"ambassador-main", "ambassador-db-standby"} <= running.keys():
            return "absent"
        argv = ["docker", "exec", running["ambassador-db-standby"], *is_standby]
    else:
        if not containers.use_kind_cluster(create=False):
            return "absent"
        found = subprocess.run(["kubectl", "-n", DB_NAMESPACE, "get", "deployment/db-standby"],
                               capture_output=True, check=False)  # fmt: skip
        if found.returncode != 0:
            return "absent"
        argv = ["kubectl", "-n", DB_NAMESPACE, "exec", "deploy/db-standby", "--", *is_standby]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode not in (0, 1):
        raise DemoError(f"could not ask the standby whether it is one: `{' '.join(argv)}` "
                        f"failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    return "standby" if result.returncode == 0 else "promoted"


# --- Compose, podman and kind ---------------------------------------------------------------


def explore(runtime: str) -> None:
    if runtime == "kind":
        console.explore([
            f"kubectl -n {APP_NAMESPACE} exec deploy/notes-app -c main -- python -c "
            "'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:8080/db\").read())'",
            f"kubectl -n {APP_NAMESPACE} logs deploy/notes-app -c ambassador",
            f"kubectl -n {DB_NAMESPACE} get pods",
            "make ambassador-failover"])  # fmt: skip
    elif runtime == "podman":
        app = podman.pod_name("Deployment", "notes-app")
        console.explore([
            "podman pod ps",
            f"curl -s {url('admin')}/upstreams ; curl -s {url('app')}/db",
            f"podman logs {app}-ambassador | tail -3",
            "make ambassador-failover"])
    else:
        console.explore([
            "docker ps --filter name=ambassador",
            f"curl -s {url('admin')}/upstreams ; curl -s {url('app')}/db",
            "make ambassador-failover"])


def run_compose() -> None:
    password = prepare_secrets().password
    os.environ["AMBASSADOR_DB_PASSWORD"] = password  # docker-compose.yml passes it as PGPASSWORD
    tag = containers.compose_up(PROFILE)
    save_state(runtime="compose", tag=tag)
    wait_http(f"{url('app')}/readyz", timeout=180,
              check=lambda: containers.check_compose_owner(PROFILE, PORTS["app"]))
    exercise(demo_seconds(60), lambda: containers.check_compose_running(PROFILE, SERVICES))
    explore("compose")


def run_podman() -> None:
    prepare_secrets()
    # The four Secrets create_k8s_secrets() makes on kind, from the same files.
    documents = podman.ambassador_secrets(SECRETS / "password", SECRETS / "pki/ca.crt",
                                          SECRETS / "pki/server.crt", SECRETS / "pki/server.key",
                                          DB_NAMESPACE, APP_NAMESPACE)
    played = containers.podman_up(PROFILE, PODMAN_PUBLISH, documents)
    save_state(runtime="podman")
    # Only the app's pod: the databases are the outside world, whose failure is the lesson.
    check = podman.check_running(played.plan, ["notes-app"])
    wait_http(f"{url('app')}/readyz", timeout=180, check=check)
    exercise(demo_seconds(60), check)
    explore("podman")


def _podman_plan() -> podman.Plan:
    """The names podman gives the pattern's pods and containers."""
    return podman.adapt(PROFILE, podman.render(PROFILE))


def _kubectl_apply_stdin(argv: list[str]) -> None:
    rendered = containers.run(["kubectl", *argv, "--dry-run=client", "-o", "yaml"],
                              capture_output=True).stdout  # fmt: skip
    containers.run(["kubectl", "apply", "-f", "-"], input=rendered, capture_output=True)


def create_k8s_secrets() -> bool:
    """The Secrets the manifests expect, from .demo/ (kubectl apply: safe to repeat). True
    when the certificates were renewed: pods of an earlier run hold the old ones."""
    renewed = prepare_secrets().renewed
    for namespace in (DB_NAMESPACE, APP_NAMESPACE):
        _kubectl_apply_stdin(["create", "namespace", namespace])
        _kubectl_apply_stdin(["-n", namespace, "create", "secret", "generic", "db-credentials",
                              f"--from-file=password={SECRETS / 'password'}"])  # fmt: skip
    _kubectl_apply_stdin(["-n", DB_NAMESPACE, "create", "secret", "generic", "db-tls",
                          f"--from-file=tls.crt={SECRETS / 'pki/server.crt'}",
                          f"--from-file=tls.key={SECRETS / 'pki/server.key'}"])  # fmt: skip
    _kubectl_apply_stdin(["-n", APP_NAMESPACE, "create", "secret", "generic", "db-ca",
                          f"--from-file=ca.crt={SECRETS / 'pki/ca.crt'}"])  # fmt: skip
    return renewed


def run_kind() -> None:
    # The namespaces and Secrets come first: an abnormal end deletes them too.
    containers.kind_teardown_on_abort(PROFILE)
    renewed = create_k8s_secrets()
    # PostgreSQL copies its certificate into PGDATA when it initialises it, and the
    # ambassador reads the CA when it starts: renewed ones need new pods.
    containers.kind_up(PROFILE, [DB_NAMESPACE, APP_NAMESPACE], restart=renewed)
    save_state(runtime="kind")
    with _kind_forward() as check:
        wait_http(f"{url('app')}/readyz", timeout=180, check=check)
        exercise(demo_seconds(60), check)
    explore("kind")


@contextlib.contextmanager
def _kind_forward() -> Iterator[Callable[[], None]]:
    with containers.port_forward(APP_NAMESPACE, "svc/notes-app", PORTS["app"], 8080) as app, \
            containers.port_forward(APP_NAMESPACE, "svc/notes-app", PORTS["admin"],
                                    9104) as admin:  # fmt: skip
        yield containers.check_all(app, admin)


def failover(runtime: str, requested: str | None = None) -> None:
    """`make ambassador-failover`: stop the primary, promote the standby, watch the app.
    The runtime: the one asked for (`requested`: --runtime or DEMO_RUNTIME), else the
    running demo's (state.json), else `runtime`, the best one available."""
    saved = load_state()
    if requested and saved and saved.get("runtime") != requested:
        say(f"{STATE} is a {saved.get('runtime')} demo's; {requested} was asked for")
    runtime = requested or str(saved.get("runtime", runtime))
    state = saved if saved.get("runtime") == runtime else {}
    status = _standby_status(runtime, state)
    if status == "absent":
        raise DemoError(NOT_RUNNING.format(runtime=runtime))
    if status == "promoted":
        raise DemoError(ALREADY_PROMOTED)
    say(f"failover on the running {runtime} demo")
    if runtime == "local":
        _failover_local(state)
        watch_failover()
    elif runtime == "compose":
        tag = str(state.get("tag", "none"))
        containers.compose("ambassador", "stop", "ambassador-db-primary", tag=tag)
        containers.compose("ambassador", "exec", "-T", "ambassador-db-standby",
                           "pg_ctl", "promote", "-D", PGDATA, tag=tag)  # fmt: skip
        watch_failover()
    elif runtime == "podman":
        _failover_podman()
        watch_failover()
    else:
        containers.run(["kubectl", "-n", DB_NAMESPACE, "scale", "deployment/db-primary",
                        "--replicas=0"])  # fmt: skip
        # Not checked: "no matching resources" just means the pod is already gone.
        wait = ["kubectl", "-n", DB_NAMESPACE, "wait", "--for=delete", "pod",
                "-l", "app.kubernetes.io/name=db-primary", "--timeout=60s"]  # fmt: skip
        say("$ " + " ".join(wait))
        subprocess.run(wait, check=False)
        containers.run(["kubectl", "-n", DB_NAMESPACE, "exec", "deploy/db-standby", "--",
                        "pg_ctl", "promote", "-D", PGDATA])  # fmt: skip
        _watch_on_kind()


def _failover_podman() -> None:
    plan = _podman_plan()
    primary = plan.pod("db-primary")
    say(f"$ podman pod stop --time {primary.grace_seconds} {primary.pod}   # the primary stops")
    podman.podman("pod", "stop", "--time", str(primary.grace_seconds), primary.pod,
                  timeout=primary.grace_seconds + 60)
    standby = plan.pod("db-standby").containers[0].container
    say(f"$ podman exec {standby} pg_ctl promote -w -D {PGDATA}   # the standby takes over")
    podman.podman("exec", standby, "pg_ctl", "promote", "-w", "-D", PGDATA, timeout=120)


def _watch_on_kind() -> None:
    """Watch the app write to the promoted standby through a port-forward of this command's
    own: the demo, running in another terminal, holds PORTS with its port-forwards."""
    local = free_port()
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(containers.port_forward(APP_NAMESPACE, "svc/notes-app",
                                                        local, 8080))
        except DemoError as error:
            # The failover itself is done: only watching it is not possible from here.
            say(f"failover done: db-primary scaled to zero, the standby promoted; the app "
                f"is not watched from here ({error}): the demo shows its notes")
            return
        watch_failover(f"http://127.0.0.1:{local}")
