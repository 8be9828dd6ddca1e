"""`make ambassador-failover` acts on the runtime the user asked for, else on the demo that
is running (.demo/ambassador/state.json), and a local demo that is gone is said to be gone,
not a traceback."""

from __future__ import annotations

import contextlib
import json

import pytest


@pytest.fixture
def demo_failover(monkeypatch, tmp_path):
    """demo.ambassador with its state file in tmp_path and every runtime's action recorded
    instead of run: (module, list of (runtime, detail))."""
    from demo import ambassador as demo

    actions: list[tuple[str, object]] = []
    monkeypatch.setattr(demo, "STATE", tmp_path / "state.json")
    monkeypatch.setattr(demo, "say", lambda _message: None)
    monkeypatch.setattr(demo, "watch_failover", lambda: None)
    monkeypatch.setattr(demo, "_kind_forward", contextlib.nullcontext)
    monkeypatch.setattr(demo, "_failover_local", lambda state: actions.append(("local", state)))
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
    with pytest.raises(SystemExit, match="is gone"):
        demo._failover_local(gone)  # not a traceback from pg_ctl
    assert not demo.STATE.exists()
