"""The sidecar guide's "Fork it: a tag per file" section, done as it says: a copy of
`patterns/` gets the section's new file (tests/unit/fork_shipper_tag/tag_by_file.py, which
the section shows verbatim) and its one changed line in tags.py, and the log-shipper run
from that copy ships access.log and error.log to a log-collector under tags of their own,
a rotated generation under its file's tag."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import requests

from tests.conftest import ROOT, free_port, http_ok, wait_until
from tests.fork import fenced_blocks, fork_patterns, guide_section

GUIDE = ROOT / "patterns" / "sidecar" / "README.md"
SECTION = "## Fork it: a tag per file"
EXAMPLE = Path(__file__).parent / "fork_shipper_tag" / "tag_by_file.py"
NEW_FILE = Path("patterns/sidecar/shipper/tag_by_file.py")
SEAM = Path("patterns/sidecar/shipper/tags.py")
BEFORE = 'TAG_RULE = "tags:fixed"\n'
AFTER = 'TAG_RULE = "tag_by_file:by_file"\n'


def section() -> str:
    return guide_section(GUIDE, SECTION)


def test_the_section_shows_the_tested_file_and_the_line_it_changes() -> None:
    blocks = [(lang, words, body) for lang, words, body in fenced_blocks(section())]
    python = [body for lang, _words, body in blocks if lang == "python"]
    assert EXAMPLE.read_text() in python, f"the section shows {EXAMPLE.name} as it is"
    assert BEFORE in python and AFTER in python, "and the line it changes, before and after"
    assert (ROOT / SEAM).read_text().count(BEFORE) == 1, "the line is in tags.py as shown"
    assert str(NEW_FILE) in section() and str(SEAM) in section()
    shell = [(words, body) for lang, words, body in blocks if lang == "sh"]
    assert shell and all(words == ["reference"] for words, _body in shell)
    assert any("FLUENT_TAG=app.logs" in body for _words, body in shell), "the tag tried"


def test_one_new_file_and_one_changed_line_give_each_file_its_tag(
    tmp_path: Path, service
) -> None:
    fork = fork_patterns(tmp_path / "fork")
    # Step 1: the new file.
    shutil.copyfile(EXAMPLE, fork / NEW_FILE)
    # Step 2: TAG_RULE names it.
    seam = fork / SEAM
    assert seam.read_text().count(BEFORE) == 1
    seam.write_text(seam.read_text().replace(BEFORE, AFTER))

    # Step 3: try it, with a log-collector (unchanged, from this tree) as the receiver.
    forward_port, collector_http = free_port(), free_port()
    service("patterns.sidecar.collector", {
        "COLLECTOR_FORWARD_HOST": "127.0.0.1",
        "COLLECTOR_FORWARD_PORT": str(forward_port),
        "COLLECTOR_HTTP_HOST": "127.0.0.1",
        "COLLECTOR_HTTP_PORT": str(collector_http),
        "COLLECTOR_DATA_DIR": str(tmp_path / "collector-data"),
        "COLLECTOR_FSYNC": "false",
    })
    collector = f"http://127.0.0.1:{collector_http}"
    wait_until(lambda: http_ok(f"{collector}/readyz"), timeout=30, what="collector")

    logs = tmp_path / "logs"
    logs.mkdir()
    shipper_port = free_port()
    output = tmp_path / "shipper.log"
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "SHIPPER_PATHS": f"{logs}/*.log",
        "SHIPPER_STATE_DIR": str(tmp_path / "shipper-state"),
        "SHIPPER_HTTP_HOST": "127.0.0.1",
        "SHIPPER_HTTP_PORT": str(shipper_port),
        "SHIPPER_CHECKPOINT_FSYNC": "false",
        "FLUENT_HOST": "127.0.0.1",
        "FLUENT_PORT": str(forward_port),
        "FLUENT_TAG": "app.logs",
    }
    with open(output, "wb") as out:
        shipper = subprocess.Popen(
            [sys.executable, "-m", "patterns.sidecar.shipper"],
            cwd=fork,  # the copy's patterns/ comes first on sys.path
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def counts() -> dict[str, int]:
        assert shipper.poll() is None, output.read_text()
        return requests.get(f"{collector}/api/counts", timeout=5).json()["tags"]

    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{shipper_port}/readyz"), timeout=30,
                   what="shipper")
        access = open(logs / "access.log", "a")  # noqa: SIM115 (the app's handle, kept over the rename)
        access.write("GET /orders 200\n")
        access.flush()
        (logs / "error.log").write_text("payment service unreachable\n")
        wait_until(lambda: counts() == {"app.logs.access": 1, "app.logs.error": 1},
                   timeout=30, what="one line under each file's tag")
        # Rotation: the app's handle writes one more line into access.log.1, then the new
        # access.log begins. Both keep the file's tag.
        (logs / "access.log").rename(logs / "access.log.1")
        access.write("GET /orders/7 200\n")
        access.close()
        (logs / "access.log").write_text("GET /health 200\n")
        wait_until(lambda: counts() == {"app.logs.access": 3, "app.logs.error": 1},
                   timeout=30, what="the rotated file's and the new file's lines")
        records = requests.get(f"{collector}/api/records?tag=app.logs.access&limit=10",
                               timeout=5).json()["records"]
        assert sorted(r["record"]["log"] for r in records) == [
            "GET /health 200", "GET /orders 200", "GET /orders/7 200"]
        assert {r["record"]["file"] for r in records} == {f"{logs}/access.log"}
        metrics = requests.get(f"http://127.0.0.1:{shipper_port}/metrics", timeout=5).text
        assert "shipper_tags_refused_total 0.0" in metrics
    finally:
        shipper.terminate()
        shipper.wait(30)
    assert shipper.returncode == 0, output.read_text()
    assert '"tag_rule": "tag_by_file:by_file"' in output.read_text()
