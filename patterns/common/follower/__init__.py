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
- What is read (the app that writes the files is not trusted: it can plant links to
  any file the follower's user may read, such as `/proc/self/environ` with the
  sidecar's secrets): by default (`Limits.follow_symlinks=False`) only regular files that
  are no symbolic link and that really are where their path says below the directory a
  glob names before its first wildcard (`/var/log/app` for `/var/log/app/*/*.log`): no
  link is followed there, neither the file (O_NOFOLLOW) nor a directory on the way (the
  opened descriptor's real path is checked, so nothing can be swapped in between), also
  for rotated generations, copies and checkpointed files. That directory itself is
  resolved once, at start: name the shared volume's mount point (the app cannot replace
  a mount point) or a directory of the image, not one the app creates. With
  `follow_symlinks=True` (a node agent on `/var/log/containers`) links are followed
  anywhere. In both cases FIFOs, sockets and devices are never opened for reading
  (looked at with stat first, opened non-blocking), and a file whose size does not
  describe its content (a `/proc` file: size 0 with content) is refused: its size would
  say "truncated" at every look and it would be read again without end. At most
  `max_files` files are open; more are refused until one closes.
- Each refusal is logged once per path (not at every scan; again if the name is planted
  again after it went away) and counted in `stats.files_refused[reason]`, reasons in
  `REFUSALS`. A refused name is looked at again when it names something else (a regular
  file written in place of a link is read).
- File names are bytes: a name that is not UTF-8 reaches `Chunk.path` with lone
  surrogates (Python's `surrogateescape`); whoever encodes it must repair it.
- Counters for metrics are in `follower.stats` (a `FollowerStats`), plus
  `follower.followed` (open files) and `follower.backlog_bytes()`; `FollowerMetrics`
  (metrics.py, needs prometheus_client) exposes them all under a service's prefix.
"""

from patterns.common.follower.access import REFUSALS
from patterns.common.follower.checkpoints import Checkpoint, CheckpointStore
from patterns.common.follower.follower import Follower, FollowerStats, Limits
from patterns.common.follower.stream import Chunk

__all__ = [
    "REFUSALS",
    "Checkpoint",
    "CheckpointStore",
    "Chunk",
    "Follower",
    "FollowerStats",
    "Limits",
]
