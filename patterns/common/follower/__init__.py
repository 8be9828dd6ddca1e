"""The file follower: tail log files by glob with checkpoints, rotation and truncation
handling, for at-least-once delivery. Used by the log shipper and the log adapter; it
knows nothing about where the lines go.

Use::

    from patterns.common.follower import CheckpointStore, Follower, Limits

    follower = Follower(["/var/log/app/*.log"], CheckpointStore("/var/lib/me"), Limits())
    while not stopping:
        chunk = follower.read(max_bytes=1 << 20, timeout=0.5)   # None: nothing new
        if chunk is None:
            continue
        deliver(chunk.path, chunk.lines)   # lines: list[str], newline removed
        follower.commit(chunk)             # only once `deliver` is durable
    # Final shutdown: deliver the rest, including unterminated last lines (the app may be
    # gone for good, as in a Job), until caught up or a deadline.
    follower.flush_incomplete(quiet=5.0)
    while time.monotonic() < deadline:
        chunk = follower.read(timeout=0.3)
        if chunk is None:
            if not follower.holds_incomplete():
                break                          # caught up
            continue                           # a last line is not quiet yet
        deliver(chunk.path, chunk.lines)
        follower.commit(chunk)
    follower.save(final=True)
    follower.close()

Guarantees and rules:

- A file without a checkpoint is read from its beginning; a checkpointed file from its
  committed offset (found again by inode, or by head fingerprint if it was renamed or
  copied while the process was down); files rotated away after it while the process was
  down (same name prefix, not compressed, newer) are read from 0, oldest first. A restart
  re-reads what was read but not committed: at-least-once.
- Commit chunks of one file in the order read() returned them (one consumer thread, or
  a queue in order). `commit` may be called from another thread than `read`.
- Rename rotation: the old file stays open and is read to its end before the new one;
  it is closed `rotate_wait` seconds after it last grew, and never before everything
  read from it is committed. Its incomplete last line is then delivered as a line.
- A live file's incomplete last line is held (it may still be completed) until its
  newline arrives, or, after `flush_incomplete(quiet)` (final shutdown), until the file
  has not grown for `quiet` seconds: then it is delivered as a line and the checkpoint
  lies after it, so if the app completes the line later, the rest arrives as a line of
  its own (nothing twice, nothing lost).
- copytruncate: a truncation (file shorter than our position, or its head changed) makes
  the follower look in the same directory for the copy (same head, at least as long as
  our position) and read it from our position first, then the truncated file from 0.
- Globs should match the live files only (`app.log`, not `app.log*`): a rotated file
  that still matches is simply followed further, but a compressed one would be read as
  new content.
- Memory is bounded: reads are at most `max_bytes` (and `max_lines` lines, if given),
  a held incomplete line at most `max_line_bytes`; longer lines are split (or
  truncated) and counted.
- With inotify (Linux), a watcher thread opens new and renamed files and takes their
  heads as the events arrive, whatever the consumer is doing. Without it (polling), call
  `poll()` now and then while the consumer cannot take chunks (destination down), so
  files created and rotated away meanwhile are opened and held.
- Limits: a file created and rotated away (or copytruncated) before the follower saw it
  (polling: between two polls; inotify: within milliseconds, under heavy CPU load) may be
  missed or, for copytruncate, lose the lines only its copy holds.
- Counters for metrics are in `follower.stats` (a `FollowerStats`), plus
  `follower.followed` (open files) and `follower.backlog_bytes()`.
"""

from patterns.common.follower.checkpoints import Checkpoint, CheckpointStore
from patterns.common.follower.follower import Chunk, Follower, FollowerStats, Limits

__all__ = ["Checkpoint", "CheckpointStore", "Chunk", "Follower", "FollowerStats", "Limits"]
