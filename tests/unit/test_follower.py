"""The file follower on real files: rotation, copytruncate, partial lines, garbage input,
inode reuse and checkpoint resume."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from patterns.common.follower import CheckpointStore, Follower, Limits
from patterns.common.follower.checkpoints import FILE_NAME

FAST = {"rotate_wait": 0.2, "poll_interval": 0.05, "rescan_interval": 0.2}


def make(tmp_path: Path, pattern: str = "*.log", **limits) -> Follower:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    return Follower(
        [str(tmp_path / "logs" / pattern)], CheckpointStore(state), Limits(**{**FAST, **limits})
    )


def drain(follower: Follower, idle: float = 0.4, commit: bool = True) -> list[tuple[str, str]]:
    """Every (path, line) the follower delivers until it has been idle for `idle` s."""
    got = []
    while (chunk := follower.read(timeout=idle)) is not None:
        got.extend((chunk.path, line) for line in chunk.lines)
        if commit:
            follower.commit(chunk)
    return got


def saved(tmp_path: Path) -> list[dict]:
    """The checkpoints on disk now, as a restart would load them (base and journal)."""
    return [asdict(c) for c in CheckpointStore(tmp_path / "state").load()]


def lines(got: list[tuple[str, str]]) -> list[str]:
    return [line for _, line in got]


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    directory = tmp_path / "logs"
    directory.mkdir()
    return directory


def append(path: Path, data: str | bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


def test_reads_existing_file_from_start_and_holds_partial_line(tmp_path, logs):
    app = logs / "app.log"
    app.write_text("one\ntwo\npar")
    follower = make(tmp_path)
    assert lines(drain(follower)) == ["one", "two"]
    append(app, "tial\nthree\n")
    got = drain(follower)
    assert got == [(str(app), "partial"), (str(app), "three")]
    follower.close()


def test_at_final_shutdown_a_quiet_unterminated_line_is_delivered_once(tmp_path, logs):
    app = logs / "app.log"
    app.write_text("one\npar")
    follower = make(tmp_path)
    assert lines(drain(follower)) == ["one"]
    assert follower.holds_incomplete()
    follower.flush_incomplete(quiet=0.5)
    append(app, "tial")  # still growing: not a line yet
    started = time.monotonic()
    chunk = follower.read(timeout=0.2)
    assert chunk is None and follower.holds_incomplete()
    chunk = follower.read(timeout=2)
    assert chunk is not None and chunk.lines == ["partial"]
    assert time.monotonic() - started >= 0.4, "delivered only once the file was quiet"
    follower.commit(chunk)
    assert not follower.holds_incomplete()
    assert follower.read(timeout=0.7) is None, "delivered once"
    follower.save(final=True)
    follower.close()
    append(app, " rest\ntwo\n")  # the app completes the line after all
    follower = make(tmp_path)
    assert lines(drain(follower)) == [" rest", "two"]
    follower.close()


def test_max_lines_bounds_a_chunk_of_short_lines(tmp_path, logs):
    app = logs / "app.log"
    app.write_bytes(b"\n" * 10_000 + b"".join(b"%d\n" % i for i in range(5000)))
    follower = make(tmp_path)
    chunks = []
    while (chunk := follower.read(max_bytes=1 << 20, timeout=0.3, max_lines=3000)) is not None:
        chunks.append(chunk)
        follower.commit(chunk)
    assert [len(c.lines) for c in chunks] == [3000] * 5
    assert [line for c in chunks for line in c.lines] == [""] * 10_000 + [
        str(i) for i in range(5000)
    ]
    assert [c.start for c in chunks[1:]] == [c.end for c in chunks[:-1]]
    assert chunks[-1].end == app.stat().st_size
    follower.close()


def test_rename_rotation_reads_old_file_to_end_then_new_and_flushes_last_line(tmp_path, logs):
    app = logs / "app.log"
    app.write_text("a1\n")
    follower = make(tmp_path)
    assert lines(drain(follower)) == ["a1"]
    append(app, "a2\n")
    os.rename(app, logs / "app.log.1")
    append(logs / "app.log.1", "a3\nunterminated")  # the app still writes to its old fd
    app.write_text("b1\n")
    got = drain(follower, idle=0.6)
    # The held last line is delivered once the rotated file is done (rotate_wait).
    assert lines(got) == ["a2", "a3", "b1", "unterminated"]
    assert all(path == str(app) for path, _ in got), "lines keep the followed name"
    assert follower.stats.rotations == 1
    assert follower.followed == 1, "the rotated file is closed after rotate_wait"
    follower.close()


def test_rotated_file_is_not_closed_before_its_lines_are_committed(tmp_path, logs):
    app = logs / "app.log"
    app.write_text("a1\n")
    follower = make(tmp_path)
    chunk = follower.read(timeout=1)
    assert chunk is not None and chunk.lines == ["a1"]
    os.rename(app, logs / "old")
    assert follower.read(timeout=0.5) is None
    assert follower.followed == 1, "not committed yet: must stay open"
    follower.commit(chunk)
    assert follower.read(timeout=0.4) is None
    assert follower.followed == 0
    follower.close()


def test_copytruncate_reads_rest_of_copy_then_truncated_file(tmp_path, logs):
    app = logs / "app.log"
    app.write_text("".join(f"line {i}\n" for i in range(10)))
    follower = make(tmp_path)
    assert len(drain(follower)) == 10
    append(app, "unread 1\nunread 2\n")  # written but not read before the copy
    shutil.copyfile(app, logs / "app.log.1")
    with open(app, "r+b") as handle:
        handle.truncate(0)
    append(app, "after 1\n")
    assert lines(drain(follower)) == ["unread 1", "unread 2", "after 1"]
    assert follower.stats.truncations == 1
    assert follower.stats.copies_found == 1
    follower.close()


def test_copytruncate_detected_by_head_when_file_regrew_past_position(tmp_path, logs):
    app = logs / "app.log"
    app.write_text("old 1\n")
    follower = make(tmp_path)
    assert lines(drain(follower)) == ["old 1"]
    shutil.copyfile(app, logs / "app.log.1")
    app.write_text("new content that is longer than before\nnew 2\n")
    assert lines(drain(follower)) == ["new content that is longer than before", "new 2"]
    assert follower.stats.truncations == 1
    follower.close()


def test_truncated_mid_line_without_copy_is_counted_and_flushed(tmp_path, logs):
    app = logs / "app.log"
    app.write_text("whole\nhalf a li")
    follower = make(tmp_path)
    assert lines(drain(follower)) == ["whole"]
    with open(app, "r+b") as handle:
        handle.truncate(0)
    append(app, "fresh\n")
    assert lines(drain(follower)) == ["half a li", "fresh"]
    assert follower.stats.truncations == 1
    assert follower.stats.truncations_without_copy == 1
    follower.close()


def test_invalid_utf8_is_replaced_and_counted(tmp_path, logs):
    (logs / "app.log").write_bytes(b"good\nbad \xff\xfe here\n\xc3\xa9t\xc3\xa9\n")
    follower = make(tmp_path)
    assert lines(drain(follower)) == ["good", "bad \ufffd\ufffd here", "été"]
    assert follower.stats.invalid_utf8_lines == 1
    follower.close()


def test_nul_bytes_are_kept_and_counted(tmp_path, logs):
    (logs / "app.log").write_bytes(b"a\x00b\nplain\n\x00\x00\n")
    follower = make(tmp_path)
    assert lines(drain(follower)) == ["a\x00b", "plain", "\x00\x00"]
    assert follower.stats.nul_lines == 2
    follower.close()


def test_long_lines_are_split_at_the_limit_without_breaking_characters(tmp_path, logs):
    long_line = "é" * 150  # 300 bytes
    (logs / "app.log").write_text(f"short\n{long_line}\nafter\n")
    follower = make(tmp_path, max_line_bytes=128)
    got = lines(drain(follower))
    assert got[0] == "short" and got[-1] == "after"
    pieces = got[1:-1]
    assert "".join(pieces) == long_line
    assert all(len(p.encode()) <= 128 for p in pieces)
    assert follower.stats.long_lines == 1
    assert follower.stats.invalid_utf8_lines == 0
    follower.close()


def test_long_line_without_newline_is_emitted_in_pieces_with_bounded_buffer(tmp_path, logs):
    app = logs / "app.log"
    with open(app, "wb") as handle:
        handle.write(b"x" * (3 * 1024 * 1024))  # 3 MiB, no newline
    follower = make(tmp_path, max_line_bytes=64 * 1024)
    got = []
    while (chunk := follower.read(max_bytes=256 * 1024, timeout=0.3)) is not None:
        got.extend(chunk.lines)
        follower.commit(chunk)
        assert len(chunk.lines) <= 5  # each read is bounded by max_bytes
    # The last 64 KiB stay held: the line may go on.
    assert len(got) == 47 and all(len(p) == 64 * 1024 for p in got)
    append(app, "tail\n")
    assert lines(drain(follower)) == ["x" * 64 * 1024, "tail"]
    assert follower.stats.long_lines == 1
    follower.close()


def test_long_lines_truncated_when_configured(tmp_path, logs):
    (logs / "app.log").write_text("a" * 1000 + "\nnext\n" + "b" * 500)
    follower = make(tmp_path, max_line_bytes=100, truncate_long_lines=True)
    assert lines(drain(follower)) == ["a" * 100, "next", "b" * 100]
    append(logs / "app.log", "b" * 500 + "\nend\n")
    assert lines(drain(follower)) == ["end"]
    assert follower.stats.long_lines == 2
    follower.close()


def test_checkpoint_resume_after_restart_without_commit_rereads(tmp_path, logs):
    app = logs / "app.log"
    app.write_text("1\n2\n")
    follower = make(tmp_path)
    assert lines(drain(follower)) == ["1", "2"]
    follower.close()
    append(app, "3\n")
    follower = make(tmp_path)
    chunk = follower.read(timeout=1)
    assert chunk is not None and chunk.lines == ["3"]
    follower.close()  # not committed: read again after the next start
    follower = make(tmp_path)
    assert lines(drain(follower)) == ["3"]
    follower.close()


def test_checkpoint_file_is_replaced_atomically(tmp_path, logs):
    (logs / "app.log").write_text("x\n")
    follower = make(tmp_path)
    drain(follower)
    state = tmp_path / "state"
    assert [p.name for p in state.iterdir()] == [FILE_NAME], "no temporary files left"
    saved = json.loads((state / FILE_NAME).read_text())["files"]
    assert saved[0]["offset"] == 2 and saved[0]["path"] == str(logs / "app.log")
    follower.close()


def test_reused_inode_with_other_content_is_read_from_start(tmp_path, logs):
    app = logs / "app.log"
    app.write_text("old content\n")
    follower = make(tmp_path)
    drain(follower)
    follower.close()
    # The file is replaced by another one with the same inode: the checkpoint's device and
    # inode match, its head fingerprint does not.
    with open(app, "r+b") as handle:
        handle.truncate(0)
        handle.write(b"NEW content, longer than the old one\n")
    follower = make(tmp_path)
    assert lines(drain(follower)) == ["NEW content, longer than the old one"]
    follower.close()


def test_rotated_while_down_is_finished_from_checkpoint(tmp_path, logs):
    app = logs / "app.log"
    app.write_text("1\n")
    follower = make(tmp_path)
    assert lines(drain(follower)) == ["1"]
    follower.close()
    append(app, "2\n")
    os.rename(app, logs / "app.log.1")
    app.write_text("new 1\n")
    follower = make(tmp_path)
    assert lines(drain(follower)) == ["2", "new 1"]
    follower.close()


def test_copytruncated_while_down_is_finished_from_the_copy(tmp_path, logs):
    app = logs / "app.log"
    app.write_text("1\n")
    follower = make(tmp_path)
    assert lines(drain(follower)) == ["1"]
    follower.close()
    append(app, "2\n")
    shutil.copyfile(app, logs / "app.log.1")
    with open(app, "r+b") as handle:
        handle.truncate(0)
    append(app, "new 1\n")
    follower = make(tmp_path)
    assert lines(drain(follower)) == ["2", "new 1"]
    follower.close()


def test_deleted_file_is_finished_and_closed_and_late_files_are_found(tmp_path, logs):
    app = logs / "app.log"
    app.write_text("1\n")
    follower = make(tmp_path)
    assert lines(drain(follower)) == ["1"]
    app.unlink()
    (logs / "other.log").write_text("o1\n")
    assert lines(drain(follower)) == ["o1"]
    assert follower.stats.deletions == 1
    assert follower.followed == 1
    follower.close()


def test_file_created_and_renamed_before_it_was_opened_is_read(tmp_path, logs):
    follower = make(tmp_path, rescan_interval=3600)
    assert follower.read(timeout=0.1) is None
    if not follower.uses_inotify:
        pytest.skip("needs inotify (Linux) to see a file that existed only between two polls")
    app = logs / "app.log"
    app.write_text("short-lived 1\nshort-lived 2\n")
    os.rename(app, logs / "app.log.1")
    got = drain(follower)
    assert got == [(str(app), "short-lived 1"), (str(app), "short-lived 2")]
    follower.close()


def test_polling_fallback_follows_rotation(tmp_path, logs):
    app = logs / "app.log"
    app.write_text("1\n")
    follower = make(tmp_path, use_inotify=False)
    assert not follower.uses_inotify
    assert lines(drain(follower)) == ["1"]
    append(app, "2\n")
    os.rename(app, logs / "app.log.1")
    app.write_text("3\n")
    assert lines(drain(follower)) == ["2", "3"]
    follower.close()


def test_poll_holds_files_rotated_while_the_consumer_is_blocked(tmp_path, logs):
    follower = make(tmp_path, use_inotify=False)  # polling: only poll() can notice them
    assert follower.read(timeout=0.1) is None
    app = logs / "app.log"
    app.write_text("first 1\n")
    time.sleep(0.1)
    follower.poll()  # the consumer's destination is down: no read(), but keep track
    os.rename(app, logs / "app.log.1")
    app.write_text("second 1\n")
    time.sleep(0.1)
    follower.poll()
    os.rename(app, logs / "app.log.2")
    assert lines(drain(follower)) == ["first 1", "second 1"]
    assert follower.stats.rotations == 2
    follower.close()


def test_lagging_reader_finds_copy_of_a_file_truncated_then_renamed(tmp_path, logs):
    app = logs / "app.log"
    app.write_text("a1\n")
    follower = make(tmp_path)
    assert lines(drain(follower)) == ["a1"]
    # Before the reader looks again: more lines, copytruncate, more lines, rename rotation.
    append(app, "a2\n")
    shutil.copyfile(app, logs / "app.log.copy")
    with open(app, "r+b") as handle:
        handle.truncate(0)
    append(app, "b1\n")
    os.rename(app, logs / "app.log.1")
    app.write_text("c1\n")
    assert lines(drain(follower)) == ["a2", "b1", "c1"]
    assert follower.stats.copies_found == 1
    follower.close()


def test_copy_found_for_a_file_truncated_before_its_first_read(tmp_path, logs):
    follower = make(tmp_path)
    assert follower.read(timeout=0.1) is None
    app = logs / "app.log"
    app.write_text("never read 1\nnever read 2\n")
    follower.poll()  # opened (and its head taken), but nothing read yet
    shutil.copyfile(app, logs / "app.log.copy")
    with open(app, "r+b") as handle:
        handle.truncate(0)
    append(app, "after\n")
    assert lines(drain(follower)) == ["never read 1", "never read 2", "after"]
    follower.close()


def test_closed_rotated_file_leaves_the_checkpoints(tmp_path, logs):
    app = logs / "app.log"
    app.write_text("1\n")
    follower = make(tmp_path)
    assert lines(drain(follower)) == ["1"]
    os.rename(app, logs / "app.log.1")
    app.write_text("2\n")
    assert lines(drain(follower, idle=0.6)) == ["2"]
    assert [f["path"] for f in saved(tmp_path)] == [str(app)]
    follower.close()
    (logs / "app.log.1").unlink()  # rotated away for good: no "lost" warning next time
    follower = make(tmp_path)
    assert drain(follower) == []
    assert follower.stats.checkpoints_lost == 0
    follower.close()


def test_generations_rotated_away_while_down_are_read_oldest_first(tmp_path, logs):
    app = logs / "app.log"
    (logs / "app.log.3").write_text("older generation, shipped long ago\n")
    (logs / "app.log.4.gz").write_bytes(b"\x1f\x8b compressed archive")
    time.sleep(0.05)  # modification times must tell the generations apart
    app.write_text("1\n")
    follower = make(tmp_path, pattern="app.log")
    assert lines(drain(follower)) == ["1"]
    follower.close()
    # Down while the app rotates twice, RotatingFileHandler style (.1 -> .2, log -> .1).
    append(app, "2\n")
    os.rename(app, logs / "app.log.1")
    time.sleep(0.05)
    app.write_text("3\n")
    os.rename(logs / "app.log.1", logs / "app.log.2")
    os.rename(app, logs / "app.log.1")
    time.sleep(0.05)
    app.write_text("4\n")
    follower = make(tmp_path, pattern="app.log")
    assert lines(drain(follower, idle=0.6)) == ["2", "3", "4"]
    assert follower.stats.rotated_while_down == 1
    follower.close()


def test_unreadable_checkpoint_file_is_set_aside_and_files_read_from_start(tmp_path, logs):
    (logs / "app.log").write_text("1\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / FILE_NAME).write_text('{"version": 1, "files": [{"dev": ')  # torn by hand
    follower = make(tmp_path)
    assert lines(drain(follower)) == ["1"]
    assert (state / (FILE_NAME + ".corrupt")).exists()
    assert json.loads((state / FILE_NAME).read_text())["files"][0]["offset"] == 2
    follower.close()


def test_a_commit_encodes_the_checkpoint_of_the_committed_file_only(tmp_path, logs, monkeypatch):
    """A commit's cost must not grow with the number of files followed (a node agent
    follows hundreds): only the file that changed is encoded again, yet the saved
    checkpoints still hold every file at its committed offset."""
    from patterns.common.follower import follower as module

    for index in range(50):
        (logs / f"f{index:02d}.log").write_text(f"{index}\n")
    follower = make(tmp_path)
    assert len(drain(follower)) == 50
    encoded = []
    real = module.encode_checkpoint
    monkeypatch.setattr(module, "encode_checkpoint", lambda c: encoded.append(c) or real(c))
    append(logs / "f07.log", "more\n")
    chunk = follower.read(timeout=2)
    assert chunk is not None and chunk.lines == ["more"]
    follower.commit(chunk)
    assert [c.path for c in encoded] == [str(logs / "f07.log")]
    assert {f["path"]: f["offset"] for f in saved(tmp_path)} == {
        str(path): path.stat().st_size for path in logs.iterdir()
    }
    follower.close()


def hundred_files_read(
    tmp_path: Path, logs: Path, monkeypatch: pytest.MonkeyPatch, poll_interval: float
) -> tuple[Follower, list]:
    """A follower (inotify, no rescan during the test) that has read 100 files to their
    end, and the list every later pread of a file is recorded in."""
    from patterns.common.follower import follower as module

    for index in range(100):
        (logs / f"f{index:02d}.log").write_text(f"{index}\n")
    follower = make(tmp_path, poll_interval=poll_interval, rescan_interval=60)
    assert follower.uses_inotify
    assert len(drain(follower)) == 100
    reads: list = []
    real = module._pread
    monkeypatch.setattr(module, "_pread", lambda *args: reads.append(args) or real(*args))
    return follower, reads


def test_files_read_to_their_end_are_not_looked_at_again_for_each_read(tmp_path, logs, monkeypatch):
    """With inotify, a read looks at the files that grew, not at every file followed: its
    cost must not grow with the number of files (a node agent follows hundreds)."""
    # No periodic look at every file during the test: only events wake a file.
    follower, reads = hundred_files_read(tmp_path, logs, monkeypatch, poll_interval=10)
    grown = [f"f{index:02d}.log" for index in range(0, 100, 20)]
    for name in grown:
        append(logs / name, "more\n")
    got = []
    while len(got) < len(grown) and (chunk := follower.read(timeout=5)) is not None:
        got.append(chunk.path)
        follower.commit(chunk)
    assert sorted(got) == [str(logs / name) for name in grown]
    # A few reads per grown file (its head, its new bytes, the look that finds its end),
    # none for the 95 files that did not grow.
    assert len(reads) <= 8 * len(grown), "files that did not grow were read again"
    follower.close()


def test_idle_files_are_not_looked_at_every_poll_interval(tmp_path, logs, monkeypatch):
    """With inotify, files read to their end cost nothing while they stay quiet: they are
    looked at again only at the rescan safety net, not every poll_interval (a node agent
    following 1,000 idle files spent about 5% of a core doing that)."""
    follower, reads = hundred_files_read(tmp_path, logs, monkeypatch, poll_interval=0.05)
    polls = 0
    started = time.monotonic()
    while time.monotonic() - started < 10 * 0.05:  # ten poll intervals, nothing written
        assert follower.read(timeout=0.05) is None
        polls += 1
    assert polls >= 5 and reads == [], "quiet files were read again without an event"
    follower.close()


def test_a_write_whose_event_was_lost_is_read_at_the_rescan(tmp_path, logs):
    app = logs / "app.log"
    app.write_text("1\n")
    follower = make(tmp_path, poll_interval=0.05, rescan_interval=0.3)
    assert lines(drain(follower)) == ["1"]
    follower._discovery._wake = lambda path: None  # the event for the next write is lost
    append(app, "2\n")
    chunk = follower.read(timeout=5)
    assert chunk is not None and chunk.lines == ["2"]
    follower.close()
