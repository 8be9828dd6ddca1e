"""The lab guides' kind blocks, run as a user would run them on the kind cluster (the
local and Compose variants: tests/guide/test_guides.py). The harness and the format:
tests/guide/harness.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.guide.conftest import TRANSCRIPTS
from tests.guide.session import guides, run_guide_session
from tests.kind.conftest import Cluster

pytestmark = pytest.mark.guide


@pytest.mark.parametrize("guide", list(guides()))
def test_guide_on_kind(guide: Path, kind_cluster: Cluster,
                       kind_images: dict[str, str]) -> None:
    # A fresh start, as a user's first run: what an earlier test or demo left of the
    # pattern is deleted, and its namespaces are gone (not terminating) before step 1.
    overlay = ROOT / "k8s" / guide.parent.name / "kind"
    kind_cluster.kubectl("delete", "-k", str(overlay), "--ignore-not-found", "--wait=true",
                         "--timeout=300s", timeout=360, check=False)
    TRANSCRIPTS.mkdir(parents=True, exist_ok=True)
    run_guide_session(guide, "kind", TRANSCRIPTS, {"KIND_CLUSTER": kind_cluster.name})
