"""`<FLUENT_TAG>.<file>`: each followed file's lines under a tag of their own, so the
collector routes them apart (Fluentd's `<match app.logs.error>`, Fluent Bit's `Match`):
with FLUENT_TAG=app.logs, `access.log` goes under `app.logs.access` and `error.log`
under `app.logs.error`. A rotated generation (`access.log.1`) is shipped under the name
it was followed by, so it keeps its file's tag.

The name is the app's: anything but ASCII letters, digits, `_` and `-` becomes `_`, and
at most 64 characters are kept, so a file adds exactly one word to the tag.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from patterns.sidecar.shipper.tags import TagRule

UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def by_file(tag: str) -> TagRule:
    def tag_for(path: str) -> str:
        return f"{tag}.{UNSAFE.sub('_', PurePosixPath(path).stem)[:64]}"

    return tag_for
