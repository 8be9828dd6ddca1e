"""Each lab guide, run as a user would run it, on local processes and on Docker Compose:
every block for that runtime in order, its output compared with the guide's (the kind
variant: tests/kind/test_guides_kind.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.guide.harness import GUIDES
from tests.guide.session import guides, run_guide_session
from tests.pg import missing_prerequisite

pytestmark = pytest.mark.guide

@pytest.mark.parametrize("guide", list(guides()))
def test_guide_on_local_processes(guide: Path, transcripts: Path) -> None:
    if guide.parent.name == "ambassador":
        problem = missing_prerequisite()
        if problem:
            pytest.skip(f"the ambassador's local lab {problem}")
    run_guide_session(guide, "local", transcripts)


@pytest.mark.parametrize("guide", list(guides()))
def test_guide_on_compose(guide: Path, transcripts: Path,
                          compose_images: dict[str, str]) -> None:
    run_guide_session(guide, "compose", transcripts)


def test_the_pattern_guides_are_found() -> None:
    assert {guide.parent.name for guide in GUIDES} >= {"sidecar", "adapter", "ambassador",
                                                        "security"}, \
        f"lab guides under {ROOT / 'patterns'}: {GUIDES}"
