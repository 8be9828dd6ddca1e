"""Checkpoints are saved as a base plus a journal: a commit appends what changed instead of
rewriting every file's checkpoint (a node agent follows hundreds of files and commits once
per batch), and a restart, even after a kill, loads the latest state from both."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import pytest

from patterns.common.follower import CheckpointStore, Follower, Limits
from patterns.common.follower.checkpoints import FILE_NAME, JOURNAL_NAME

LIMITS = Limits(rotate_wait=0.2, poll_interval=0.05, rescan_interval=0.2)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    directory = tmp_path / "logs"
    directory.mkdir()
    return directory


def make(tmp_path: Path, **store: int) -> Follower:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    return Follower([str(tmp_path / "logs" / "*.log")], CheckpointStore(state, **store), LIMITS)


def drain(follower: Follower) -> list[str]:
    got = []
    while (chunk := follower.read(timeout=0.3)) is not None:
        got.extend(chunk.lines)
        follower.commit(chunk)
    return got


def offsets(tmp_path: Path) -> dict[str, int]:
    """What a restart would load now, by path."""
    return {c.path: c.offset for c in CheckpointStore(tmp_path / "state").load()}


def append(path: Path, text: str) -> None:
    with open(path, "a") as handle:
        handle.write(text)


def base_then_journal(tmp_path: Path, logs: Path) -> tuple[Path, Follower]:
    """app.log committed twice: the base says offset 2, the journal's record offset 4."""
    app = logs / "app.log"
    app.write_text("1\n")
    follower = make(tmp_path)
    assert drain(follower) == ["1"]  # a process's first save: the base
    append(app, "2\n")
    assert drain(follower) == ["2"]  # the journal
    assert (tmp_path / "state" / JOURNAL_NAME).exists()
    return app, follower


def test_a_commit_appends_its_file_only_and_rewrites_nothing(tmp_path, logs):
    for index in range(200):
        (logs / f"f{index:03d}.log").write_text(f"{index}\n")
    follower = make(tmp_path)
    assert len(drain(follower)) == 200
    base = tmp_path / "state" / FILE_NAME
    journal = tmp_path / "state" / JOURNAL_NAME
    base_inode = base.stat().st_ino
    journal_size = journal.stat().st_size
    append(logs / "f123.log", "more\n")
    assert drain(follower) == ["more"]
    assert base.stat().st_ino == base_inode, "the base was not rewritten"
    record = journal.read_bytes()[journal_size:]
    assert record.count(b"\n") == 1 and b"f123.log" in record  # one record: the file's
    assert offsets(tmp_path)[str(logs / "f123.log")] == len("123\nmore\n")
    follower.close()


def test_a_restart_after_a_kill_resumes_from_the_journal(tmp_path, logs):
    for index in range(5):
        (logs / f"f{index}.log").write_text(f"{index}\n")
    follower = make(tmp_path)
    assert sorted(drain(follower)) == ["0", "1", "2", "3", "4"]
    for round_ in range(3):
        append(logs / "f2.log", f"round {round_}\n")
        assert drain(follower) == [f"round {round_}"]
    # No final save and no close: as after a SIGKILL, only what each commit wrote.
    assert (tmp_path / "state" / JOURNAL_NAME).exists()
    append(logs / "f4.log", "after the kill\n")
    again = make(tmp_path)
    assert drain(again) == ["after the kill"]  # nothing read twice
    again.close()
    follower.close()


def test_the_journal_is_folded_into_a_new_base_when_it_outgrows_it(tmp_path, logs):
    app = logs / "app.log"
    app.write_text("0\n")
    (logs / "other.log").write_text("x\n")
    (logs / "third.log").write_text("y\n")  # a base worth a few records
    follower = make(tmp_path, journal_min_bytes=0)
    drain(follower)
    base = (tmp_path / "state" / FILE_NAME).stat().st_size
    journal = tmp_path / "state" / JOURNAL_NAME
    largest = 0
    for number in range(1, 30):
        append(app, f"{number}\n")
        assert drain(follower) == [str(number)]
        if journal.exists():
            largest = max(largest, journal.stat().st_size)
    # Never much larger than its base (a header and one record beyond it), and the
    # state a restart loads is the last commit's.
    assert 0 < largest < 2 * base + 100
    assert offsets(tmp_path)[str(app)] == app.stat().st_size
    follower.close()


def test_the_final_save_leaves_one_base_and_no_journal(tmp_path, logs):
    app, follower = base_then_journal(tmp_path, logs)
    follower.save(final=True)
    follower.close()
    state = tmp_path / "state"
    assert [p.name for p in state.iterdir()] == [FILE_NAME]
    saved = json.loads((state / FILE_NAME).read_text())["files"]
    assert [(f["path"], f["offset"]) for f in saved] == [(str(app), 4)]


def test_a_torn_last_record_is_ignored_and_the_rest_applies(tmp_path, logs):
    app, follower = base_then_journal(tmp_path, logs)
    follower.close()
    journal = tmp_path / "state" / JOURNAL_NAME
    append(journal, '{"key":1,"file":{"dev":')  # a power cut during a write
    assert offsets(tmp_path) == {str(app): 4}


def test_a_garbled_journal_costs_its_later_records_never_the_base(tmp_path, logs, caplog):
    app, follower = base_then_journal(tmp_path, logs)
    follower.close()
    journal = tmp_path / "state" / JOURNAL_NAME
    header, record, _ = journal.read_bytes().split(b"\n")
    journal.write_bytes(header + b"\n" + b"garbage\n" + record + b"\n")
    with caplog.at_level(logging.ERROR):
        assert offsets(tmp_path) == {str(app): 2}  # the base's: lines 2 is shipped again
    assert "checkpoint journal unreadable" in caplog.text
    assert not (tmp_path / "state" / (FILE_NAME + ".corrupt")).exists()


def test_a_journal_of_an_earlier_base_is_ignored(tmp_path, logs):
    app, follower = base_then_journal(tmp_path, logs)
    journal = tmp_path / "state" / JOURNAL_NAME
    stale = journal.read_bytes()  # says offset 4, for the base of its generation
    follower.close()
    app.write_text("")  # truncated; then a new base says offset 0
    follower = make(tmp_path)
    drain(follower)
    follower.save(final=True)
    follower.close()
    journal.write_bytes(stale)  # as if the base was replaced and the journal not yet
    assert offsets(tmp_path) == {str(app): 0}


def test_a_link_planted_at_the_journal_does_not_redirect_the_write(tmp_path, logs):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("secret\n")
    app = logs / "app.log"
    app.write_text("1\n")
    follower = make(tmp_path)
    drain(follower)  # the base
    (tmp_path / "state" / JOURNAL_NAME).symlink_to(secret)
    append(app, "2\n")
    assert drain(follower) == ["2"]
    assert secret.read_text() == "secret\n"
    assert follower.store is not None
    ok, detail = follower.store.check_writable()
    assert not ok and "cannot save checkpoints" in detail  # readiness says so
    follower.close()


def test_a_fifo_at_the_journal_does_not_block_the_start(tmp_path, logs):
    app = logs / "app.log"
    app.write_text("1\n")
    follower = make(tmp_path)
    drain(follower)
    follower.close()
    os.mkfifo(tmp_path / "state" / JOURNAL_NAME)
    assert [asdict(c)["offset"] for c in CheckpointStore(tmp_path / "state").load()] == [2]


def test_a_base_with_keys_and_files_that_disagree_is_set_aside(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / FILE_NAME).write_text('{"version":1,"generation":"g","keys":[1,2],"files":[]}')
    assert CheckpointStore(state).load() == []
    assert (state / (FILE_NAME + ".corrupt")).exists()
