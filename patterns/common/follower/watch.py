"""Directory watches: inotify's raw events turned into what happened to which path.

The follower watches the directories its globs name and asks `changes()` what the events
mean: a file grew, was created, deleted, renamed (with where it came from, when the
rename stayed among the watched directories), or "look again at everything" (the event
queue overflowed, a watched directory went away, a directory changed). Knowing nothing of
the followed files, it can be read alone.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from patterns.common.follower import inotify

log = logging.getLogger(__name__)

# What a `Change` says happened.
GREW = "grew"
CREATED = "created"
DELETED = "deleted"
MOVED_FROM = "moved_from"  # renamed away (followed by MOVED_TO if it stayed in sight)
MOVED_TO = "moved_to"
RESCAN = "rescan"  # events were lost or a directory changed: look at everything again
_MOVES_KEPT = 1024  # MOVED_FROM without MOVED_TO (moved out of sight) are forgotten


@dataclass(frozen=True)
class Change:
    kind: str  # one of the names above
    path: str = ""  # the file it happened to (empty for RESCAN)
    source: str | None = None  # MOVED_TO: where it was before, if that was watched


class DirectoryWatch:
    def __init__(self, events: inotify.Inotify) -> None:
        self.inotify = events
        self._directories: dict[int, str] = {}  # watch descriptor -> directory
        self._watched: dict[str, int] = {}  # directory -> watch descriptor
        self._moves: dict[int, str] = {}  # rename cookie -> source path

    def fileno(self) -> int:
        return self.inotify.fileno()

    def watches(self, directory: str) -> bool:
        return directory in self._watched

    def watch(self, directories: set[str]) -> None:
        """Watch the directories not watched yet."""
        for directory in directories - set(self._watched):
            try:
                wd = self.inotify.add_watch(directory)
            except OSError as exc:
                log.warning("cannot watch directory", extra={"path": directory, "error": str(exc)})
                continue
            self._watched[directory] = wd
            self._directories[wd] = directory

    def read_events(self) -> list[inotify.Event]:
        return self.inotify.read_events()

    @staticmethod
    def growth_only(events: list[inotify.Event]) -> bool:
        """Only files grew (the common case at high rates: no file comes or goes)."""
        return bool(events) and all(event.mask == inotify.IN_MODIFY for event in events)

    def changes(self, events: list[inotify.Event]) -> list[Change]:
        changes: list[Change] = []
        for event in events:
            if event.mask & inotify.IN_Q_OVERFLOW:
                changes.append(Change(RESCAN))
                continue
            directory = self._directories.get(event.wd)
            if directory is None:
                continue
            if event.mask & (inotify.IN_IGNORED | inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF):
                del self._directories[event.wd]
                self._watched.pop(directory, None)
                changes.append(Change(RESCAN))
                continue
            if event.mask & inotify.IN_ISDIR:
                changes.append(Change(RESCAN))
                continue
            path = os.path.join(directory, event.name)
            if event.mask & inotify.IN_MOVED_FROM:
                self._moves[event.cookie] = path
                while len(self._moves) > _MOVES_KEPT:
                    del self._moves[next(iter(self._moves))]
                changes.append(Change(MOVED_FROM, path))
            elif event.mask & inotify.IN_MOVED_TO:
                changes.append(Change(MOVED_TO, path, self._moves.pop(event.cookie, None)))
            elif event.mask & inotify.IN_CREATE:
                changes.append(Change(CREATED, path))
            elif event.mask & inotify.IN_DELETE:
                changes.append(Change(DELETED, path))
            else:
                changes.append(Change(GREW, path))
        return changes

    def close(self) -> None:
        self.inotify.close()
