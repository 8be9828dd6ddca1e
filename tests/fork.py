"""What the guides' "Fork it" tests share: the section as the guide prints it, its fenced
blocks, and a copy of `patterns/` to apply the section's steps to."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import NamedTuple

from tests.conftest import ROOT

_FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)


class Block(NamedTuple):
    lang: str  # the fence's language: python, sh, text...
    words: list[str]  # what follows it on the fence line, e.g. ["reference"]
    body: str


def guide_section(guide: Path, heading: str) -> str:
    """The guide's section under `heading` (a "## " line), up to the next one."""
    text = guide.read_text()
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : None if end == -1 else end]


def fenced_blocks(text: str) -> list[Block]:
    return [Block(lang, words.split(), body) for lang, words, body in _FENCE.findall(text)]


def fork_patterns(into: Path) -> Path:
    """A copy of this repository's `patterns/` under `into`, as a forker starts; returns
    `into`, the directory to run the copy's services from (its patterns/ comes first)."""
    shutil.copytree(ROOT / "patterns", into / "patterns",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return into


def register(registry: Path, anchor: str, line: str) -> None:
    """Add `line` as the last entry of the dict literal that opens with `anchor` (for
    example 'FORMATS: dict[str, str] = {\\n'), as the guide's registration step says."""
    text = registry.read_text()
    assert text.count(anchor) == 1, f"{registry} has one {anchor.strip()!r}"
    closing = text.index("\n}\n", text.index(anchor))
    registry.write_text(text[: closing + 1] + line + text[closing + 1 :])
