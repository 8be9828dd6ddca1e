"""A kind demo talks to the kind cluster only, whatever context the user's kubeconfig has
selected: every kubectl it runs (its children's too) gets KUBECONFIG pointing at the
cluster's own kubeconfig, written private to the user."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from demo import containers


@pytest.fixture
def fake_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `kind` that knows one cluster and logs its calls."""
    calls = tmp_path / "calls"
    kind = tmp_path / "bin" / "kind"
    kind.parent.mkdir()
    kind.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        'case "$1 $2" in\n'
        '  "get clusters") echo unit-test-cluster ;;\n'
        '  "get kubeconfig") echo "kubeconfig-of-$4" ;;\n'
        "  *) exit 1 ;;\n"
        "esac\n")
    kind.chmod(kind.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{kind.parent}:{os.environ['PATH']}")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setattr(containers, "KIND_CLUSTER", "unit-test-cluster")
    yield calls
    (containers.ROOT / "build" / "kind-unit-test-cluster.kubeconfig").unlink(missing_ok=True)


def test_every_kubectl_of_the_demo_talks_to_the_kind_cluster(fake_kind: Path) -> None:
    assert containers.use_kind_cluster(create=False)
    kubeconfig = Path(os.environ["KUBECONFIG"])
    assert kubeconfig == containers.ROOT / "build" / "kind-unit-test-cluster.kubeconfig"
    assert kubeconfig.read_text().strip() == "kubeconfig-of-unit-test-cluster"
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600  # it holds the cluster's keys
    calls = fake_kind.read_text().splitlines()
    assert containers.use_kind_cluster()  # a second call (kind_up after main) reuses it
    assert fake_kind.read_text().splitlines() == calls


def test_no_cluster_and_no_creating_leaves_kubectl_alone(fake_kind: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "KIND_CLUSTER", "another-cluster")
    assert not containers.use_kind_cluster(create=False)
    assert "KUBECONFIG" not in os.environ
