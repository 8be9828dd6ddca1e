"""What the app container can plant in the shared volume, and what the follower does with
it: symlinks out of the volume (`evil.log -> /proc/self/environ`, `-> /etc/shadow`),
symlinked directories, FIFOs, sockets, devices, /proc files, a flood of files. By default
only regular files whose real path stays inside the directories the globs name are read;
each refusal is logged once per path and counted."""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

import pytest

from patterns.common.follower import CheckpointStore, Follower, Limits

FAST: dict[str, object] = {"rotate_wait": 0.2, "poll_interval": 0.05, "rescan_interval": 0.1}
SECRET = "SECRET-the-sidecar-must-never-ship-this"


def make(tmp_path: Path, pattern: str = "*.log", **limits) -> Follower:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    return Follower(
        [str(tmp_path / "logs" / pattern)], CheckpointStore(state), Limits(**{**FAST, **limits})
    )


def drain(follower: Follower, idle: float = 0.4) -> list[tuple[str, str]]:
    """Every (path, line) delivered until the follower has been idle for `idle` s."""
    got = []
    while (chunk := follower.read(timeout=idle)) is not None:
        got.extend((chunk.path, line) for line in chunk.lines)
        follower.commit(chunk)
    return got


def collect(follower: Follower, scans: int) -> list[tuple[str, str]]:
    """Every (path, line) delivered while the follower makes at least `scans` full scans
    (bounded: a file that is delivered again and again does not keep this going)."""
    got = []
    scans_done = 0
    next_scan = follower._discovery.next_scan
    while scans_done < scans:
        chunk = follower.read(timeout=0.05)
        if chunk is not None:
            got.extend((chunk.path, line) for line in chunk.lines)
            follower.commit(chunk)
        if follower._discovery.next_scan != next_scan:
            scans_done += 1
            next_scan = follower._discovery.next_scan
    return got


@pytest.fixture(params=["inotify", "polling"], autouse=True)
def watching(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test with inotify (a new name is opened as its event arrives) and without (a
    scan finds it): both paths must refuse the same files."""
    monkeypatch.setitem(FAST, "use_inotify", request.param == "inotify")


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    directory = tmp_path / "logs"
    directory.mkdir()
    return directory


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the followed one, holding a file the sidecar can read."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret.txt").write_text(SECRET + "\n")
    return directory


def refusals(caplog: pytest.LogCaptureFixture, path: Path) -> list[str]:
    return [
        r.reason  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "file refused" and r.path == str(path)  # type: ignore[attr-defined]
    ]


def test_a_symlink_out_of_the_directory_is_never_read_and_refused_once(
    tmp_path, logs, outside, caplog
):
    caplog.set_level(logging.INFO, logger="patterns.common.follower")
    (logs / "app.log").write_text("app 1\n")
    (logs / "evil.log").symlink_to(outside / "secret.txt")
    (logs / "environ.log").symlink_to("/proc/self/environ")
    follower = make(tmp_path)
    got = collect(follower, scans=5)
    assert got == [(str(logs / "app.log"), "app 1")]
    assert follower.stats.files_refused["symlink"] == 2
    assert refusals(caplog, logs / "evil.log") == ["symlink"], "logged once, not every scan"
    assert refusals(caplog, logs / "environ.log") == ["symlink"]
    follower.close()


def test_a_refused_name_replaced_by_a_regular_file_is_read(tmp_path, logs, outside, caplog):
    caplog.set_level(logging.INFO, logger="patterns.common.follower")
    evil = logs / "evil.log"
    evil.symlink_to(outside / "secret.txt")
    follower = make(tmp_path)
    assert collect(follower, scans=2) == []
    evil.unlink()
    evil.write_text("a regular file now\n")
    assert drain(follower) == [(str(evil), "a regular file now")]
    evil.unlink()
    evil.symlink_to(outside / "secret.txt")  # planted again: refused (and logged) again
    assert collect(follower, scans=3) == []
    assert refusals(caplog, evil) == ["symlink", "symlink"]
    assert follower.stats.files_refused["symlink"] == 2
    follower.close()


def test_a_symlink_to_a_file_inside_the_directory_is_refused_by_default(tmp_path, logs):
    # Safest default: no link is followed at all, even one that stays in the volume.
    (logs / "inner.txt").write_text("inner\n")  # not matched by the glob
    (logs / "link.log").symlink_to("inner.txt")
    follower = make(tmp_path)
    assert collect(follower, scans=3) == []
    assert follower.stats.files_refused["symlink"] == 1
    follower.close()


def test_follow_symlinks_opt_in_reads_links_out_of_the_directory(tmp_path, logs, outside):
    # What a node-level agent needs: /var/log/containers/*.log -> /var/log/pods/...
    pods = outside / "pods"
    pods.mkdir()
    (pods / "0.log").write_text("container line\n")
    (logs / "web.log").symlink_to(pods / "0.log")
    follower = make(tmp_path, follow_symlinks=True)
    assert drain(follower) == [(str(logs / "web.log"), "container line")]
    assert sum(follower.stats.files_refused.values()) == 0
    follower.close()


def test_a_symlinked_directory_out_of_the_volume_is_not_read(tmp_path, logs, outside, caplog):
    caplog.set_level(logging.INFO, logger="patterns.common.follower")
    (logs / "app").mkdir()
    (logs / "app" / "a.log").write_text("a 1\n")
    (outside / "x.log").write_text(SECRET + "\n")
    (logs / "evil").symlink_to(outside)
    follower = make(tmp_path, pattern="*/*.log")
    got = collect(follower, scans=5)
    assert got == [(str(logs / "app" / "a.log"), "a 1")]
    assert follower.stats.files_refused["outside"] == 1
    assert refusals(caplog, logs / "evil" / "x.log") == ["outside"]
    follower.close()


def test_the_directory_a_glob_names_replaced_by_a_symlink_after_start(tmp_path, logs, outside):
    sub = logs / "sub"
    sub.mkdir()
    (sub / "a.log").write_text("a 1\n")
    (outside / "x.log").write_text(SECRET + "\n")
    follower = make(tmp_path, pattern="sub/*.log")
    assert drain(follower) == [(str(sub / "a.log"), "a 1")]
    os.rename(sub, logs / "sub.old")
    sub.symlink_to(outside)  # the app swaps the named directory for a link out of the volume
    got = collect(follower, scans=5)
    assert all(SECRET not in line for _, line in got), got
    assert follower.stats.files_refused["outside"] == 1
    follower.close()


def test_a_symlinked_rotated_generation_is_not_read(tmp_path, logs, outside):
    app = logs / "app.log"
    app.write_text("1\n")
    follower = make(tmp_path, pattern="app.log")
    assert [line for _, line in drain(follower)] == ["1"]
    follower.close()
    # Down while the app rotates, and plants a "newer generation" that links elsewhere.
    with open(app, "a") as handle:
        handle.write("2\n")
    os.rename(app, logs / "app.log.1")
    (logs / "app.log.2").symlink_to(outside / "secret.txt")
    future = time.time() + 60  # newer than the checkpointed file: a generation candidate
    os.utime(outside / "secret.txt", (future, future))
    follower = make(tmp_path, pattern="app.log")
    got = collect(follower, scans=3)
    assert [line for _, line in got] == ["2"]
    assert follower.stats.files_refused["symlink"] == 1
    assert follower.stats.rotated_while_down == 0
    follower.close()


def test_fifo_socket_and_device_do_not_block_and_are_refused(tmp_path, logs):
    os.mkfifo(logs / "pipe.log")  # nobody writes to it: opening it for reading would block
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(logs / "sock.log"))
    (logs / "zero.log").symlink_to("/dev/zero")  # a device that never ends
    (logs / "app.log").write_text("app 1\n")
    for follow in (False, True):
        follower = make(tmp_path, follow_symlinks=follow)
        started = time.monotonic()
        assert collect(follower, scans=3) == [(str(logs / "app.log"), "app 1")]
        assert time.monotonic() - started < 5
        refused = follower.stats.files_refused
        if follow:
            assert refused["not_regular"] == 3
        else:
            assert (refused["not_regular"], refused["symlink"]) == (2, 1)
        follower.close()
        (tmp_path / "state" / "checkpoints.json").unlink()
    server.close()


@pytest.mark.skipif(not os.path.exists("/proc/self/environ"), reason="needs Linux /proc")
def test_a_proc_file_is_not_read_again_and_again_even_with_symlinks_followed(tmp_path, logs):
    # /proc files have size 0 and content: once read, the size said "truncated" at every
    # poll and the file was read from 0 again, without end.
    (logs / "environ.log").symlink_to("/proc/self/environ")
    (logs / "status.log").symlink_to("/proc/self/status")
    (logs / "app.log").write_text("app 1\n")
    follower = make(tmp_path, follow_symlinks=True)
    got = collect(follower, scans=6)
    assert got == [(str(logs / "app.log"), "app 1")]
    assert follower.stats.files_refused["pseudo_file"] == 2
    follower.close()


def test_an_empty_regular_file_that_grows_is_not_mistaken_for_a_proc_file(tmp_path, logs):
    app = logs / "app.log"
    app.touch()
    follower = make(tmp_path)
    assert drain(follower, idle=0.2) == []
    app.write_text("first\n")
    assert drain(follower) == [(str(app), "first")]
    assert sum(follower.stats.files_refused.values()) == 0
    follower.close()


def test_more_files_than_max_files_are_refused_until_a_followed_one_closes(tmp_path, logs):
    for name in "abcde":
        (logs / f"{name}.log").write_text(f"{name} 1\n")
    follower = make(tmp_path, max_files=3)
    got = collect(follower, scans=4)
    assert sorted(line for _, line in got) == ["a 1", "b 1", "c 1"]
    assert follower.followed == 3
    assert follower.stats.files_refused["too_many_files"] == 2
    (logs / "a.log").unlink()  # closed after rotate_wait: room for one more
    (logs / "b.log").unlink()
    got = drain(follower, idle=0.6)
    assert sorted(line for _, line in got) == ["d 1", "e 1"]
    assert follower.followed == 3
    follower.close()


def test_file_names_with_invalid_utf8_and_control_characters_are_followed(tmp_path, logs):
    raw = os.fsencode(logs) + b"/bad-\xff-\x1b[31m.log"
    with open(raw, "wb") as handle:
        handle.write(b"still read\n")
    follower = make(tmp_path)
    got = drain(follower)
    assert got == [(os.fsdecode(raw), "still read")]
    follower.close()
    follower = make(tmp_path)  # its checkpoint (a surrogate-escaped name) is read back
    assert drain(follower) == []
    assert follower.stats.checkpoints_lost == 0
    follower.close()


def test_a_link_in_the_state_directory_does_not_redirect_the_checkpoint_write(
    tmp_path, logs, outside
):
    # The state directory belongs on a volume of its own; if it is shared after all, a
    # link planted at the temporary file's name must not make us overwrite its target.
    (logs / "app.log").write_text("1\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / f".checkpoints.json.{os.getpid()}.tmp").symlink_to(outside / "secret.txt")
    follower = make(tmp_path)
    assert drain(follower) == [(str(logs / "app.log"), "1")]
    assert (outside / "secret.txt").read_text() == SECRET + "\n"
    ok, detail = follower.store.check_writable()
    assert not ok and "cannot save checkpoints" in detail  # readiness says so
    follower.close()
